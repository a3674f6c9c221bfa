"""EK-100 / EGTEA annotation files + videos -> labelled records (`records/finetune_sources.py`)
and the `convert-epic` / `convert-egtea` commands: known labels, class maps, MIR captions."""
import csv
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from egovideo_jax.io.epic_files import read_epic_csv
from egovideo_jax.records import schema
from egovideo_jax.records.classes import read_classes
from egovideo_jax.records.dataset import open_dataset
from egovideo_jax.records.finetune_sources import convert_egtea, convert_epic, epic_captions
from tests.helpers import finetune_fixtures as fx
from tests.helpers.videos import LEVEL_STEP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 4  # lossless video, then bicubic resize and JPEG
FAST = dict(frames_per_clip=2, short_side=24, progress=False)


@pytest.fixture(scope='module')
def epic(tmp_path_factory):
    return fx.write_epic(tmp_path_factory.mktemp('epic'))


@pytest.fixture(scope='module')
def egtea(tmp_path_factory):
    return fx.write_egtea(tmp_path_factory.mktemp('egtea'))


def decoded(directory):
    dataset = open_dataset(directory)
    assert dataset.verify() == []
    return {clip['clip_id']: clip for clip in map(dataset.decode, range(len(dataset)))}


def frame_indices(clip):
    """Which video frames (grey level / LEVEL_STEP) the clip stored."""
    frames = schema.decode_frames(clip).astype(np.float64)
    levels = frames.mean(axis=(1, 2, 3))
    assert np.all(np.abs(frames - levels[:, None, None, None]) <= TOLERANCE)
    return np.round(levels / LEVEL_STEP).astype(int).tolist()


def skipped_rows(directory):
    with open(directory / 'skipped.csv', newline='') as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------------------- EPIC-KITCHENS

def test_epic_labels_classes_and_frames(epic, tmp_path):
    summary = convert_epic(epic.train_csv, epic.videos, tmp_path,
                           verb_classes_csv=epic.verb_classes,
                           noun_classes_csv=epic.noun_classes, **FAST)
    assert summary.counts == {'rows': 6, 'videos': 3, 'clips written': 5,
                              'clips without an action label': 0}
    assert summary.conversion.skip_counts() == {'missing video': 1}
    (skip,) = skipped_rows(tmp_path)
    assert (skip['line'], skip['video_id'], skip['reason']) == ('7', 'P09_01', 'missing video')
    assert 'EPIC_100_train.csv, line 7' in skip['detail'] and 'P09/P09_01.MP4' in skip['detail']

    clips = decoded(tmp_path)
    assert list(clips) == ['P01_01_0', 'P01_01_1', 'P02_03_0', 'P02_03_1', 'P01_01_2']
    for row in fx.EPIC_TRAIN[:5]:
        clip = clips[row.narration_id]
        action = fx.TRAIN_ACTIONS.index((row.verb_class, row.noun_class))
        assert clip['labels'] == {'verb': row.verb_class, 'noun': row.noun_class,
                                  'action': action}
        assert (clip['video_id'], clip['source'], clip['narration']) == (
            row.video_id, 'epic', row.narration)
        assert (clip['start'], clip['end']) == pytest.approx((row.start, row.stop))
        assert clip['captions'] == [] and clip['hod'] == []
        # 2 frames at the segment centres start + 0.25 s, start + 0.75 s (exact at 8 fps),
        # from videos/P01_01.mp4 and videos/P02/P02_03.MP4 alike.
        expected = [round((row.start + offset) * fx.FPS) for offset in (0.25, 0.75)]
        assert frame_indices(clip) == expected
        np.testing.assert_allclose(clip['frame_times'], np.array(expected) / fx.FPS,
                                   atol=1e-4)

    classes = read_classes(tmp_path)
    assert classes.names == {'verb': ['take', 'wash', 'open', 'close'],
                             'noun': ['tap', 'drawer', 'plate', 'knife'],
                             'action': fx.TRAIN_ACTION_NAMES}
    assert classes.action_to_verb.tolist() == [verb for verb, _ in fx.TRAIN_ACTIONS]
    assert classes.action_to_noun.tolist() == [noun for _, noun in fx.TRAIN_ACTIONS]
    assert classes.source == 'EPIC_100_train.csv'
    manifest = open_dataset(tmp_path).manifest
    assert manifest['label_fields'] == ['labels/verb', 'labels/noun', 'labels/action']
    assert manifest['fps'] == fx.FPS
    assert 'classes: verb 4, noun 4, action 4' in summary.lines()


def test_epic_validation_unseen_pair_has_no_action(epic, tmp_path):
    """The action set comes from the training CSV; without class CSVs the names are ids."""
    summary = convert_epic(epic.validation_csv, epic.videos, tmp_path,
                           action_classes_from=[epic.train_csv], **FAST)
    assert summary.counts['clips without an action label'] == 1
    clips = decoded(tmp_path)
    assert clips['P02_03_2']['labels'] == {'verb': 0, 'noun': 3,
                                           'action': fx.TRAIN_ACTIONS.index((0, 3))}
    assert clips['P01_01_3']['labels'] == {'verb': 3, 'noun': 1}  # (close, drawer): unseen
    classes = read_classes(tmp_path)
    assert classes.names['verb'] == ['0', '1', '2', '3']
    assert classes.names['noun'] == ['0', '1', '2', '3']
    assert classes.names['action'] == ['0:2', '0:3', '1:2', '2:1']
    assert classes.source == 'EPIC_100_train.csv'


def test_epic_mir_captions(epic, tmp_path):
    summary = convert_epic(epic.train_csv, epic.videos, tmp_path,
                           sentences_csv=epic.sentences_csv, relevancy_pkl=epic.relevancy_pkl,
                           **FAST)
    assert summary.counts['sentences'] == 4
    assert summary.counts['clips whose own narration was added'] == 1  # P01_01_2
    assert summary.counts['captions stored'] == 11  # of the 5 written clips
    clips = decoded(tmp_path)
    for clip_id, clip in clips.items():
        expected = fx.EXPECTED_CAPTIONS[clip_id]
        assert clip['captions'] == [text for text, _ in expected], clip_id
        np.testing.assert_allclose(clip['caption_relevancy'], [rel for _, rel in expected])
        assert clip['narration'] in clip['captions']
    assert 'captions/text' in open_dataset(tmp_path).manifest['label_fields']


def test_epic_max_captions_keeps_own_narration(epic, tmp_path):
    clips = read_epic_csv(epic.train_csv)[:2]  # own narrations 'open drawer', 'take knife'
    relevancy = np.array([[0.3, 0.9, 0.8, 0.5], [0.0, 1.0, 0.0, 0.5]])
    with open(tmp_path / 'relevancy.pkl', 'wb') as file:
        pickle.dump(relevancy, file)
    captions, num_sentences, own_added = epic_captions(
        clips, epic.sentences_csv, tmp_path / 'relevancy.pkl', max_captions=2)
    assert (num_sentences, own_added) == (4, 0)
    assert captions[0] == (('take knife', 0.9), ('open drawer', 0.3))
    assert captions[1] == (('take knife', 1.0), ('take plate', 0.5))


def test_epic_input_errors_name_the_file(epic, tmp_path):
    header = [column if column != 'verb_class' else 'verb_id' for column in fx.EPIC_HEADER]
    bad_csv = fx.write_epic_csv(tmp_path / 'bad.csv', fx.EPIC_TRAIN, header=header)
    with pytest.raises(ValueError, match=r'bad\.csv, line 1: header lacks columns '
                                         r"\['verb_class'\]"):
        convert_epic(bad_csv, epic.videos, tmp_path / 'out1', **FAST)

    few_verbs = fx.write_class_csv(tmp_path / 'verbs.csv', fx.VERB_CLASSES[:2])
    with pytest.raises(ValueError, match=r'EPIC_100_train\.csv, line 2: verb_class 2 is not '
                                         r'a class of .*verbs\.csv \(0\.\.1\)'):
        convert_epic(epic.train_csv, epic.videos, tmp_path / 'out2',
                     verb_classes_csv=few_verbs, **FAST)

    with open(tmp_path / 'short.pkl', 'wb') as file:
        pickle.dump(fx.RELEVANCY[:3], file)
    with pytest.raises(ValueError, match=r'short\.pkl: relevancy has shape \(3, 4\), '
                                         r'expected \(6, 4\)'):
        convert_epic(epic.train_csv, epic.videos, tmp_path / 'out3',
                     sentences_csv=epic.sentences_csv, relevancy_pkl=tmp_path / 'short.pkl',
                     **FAST)
    with pytest.raises(ValueError, match='need both'):
        convert_epic(epic.train_csv, epic.videos, tmp_path / 'out4',
                     sentences_csv=epic.sentences_csv, **FAST)
    assert not any((tmp_path / name).exists() for name in ('out1', 'out2', 'out3', 'out4'))


# ---------------------------------------------------------------------------- EGTEA Gaze+

def test_egtea_labels_are_zero_based(egtea, tmp_path):
    summary = convert_egtea(egtea.split, egtea.action_idx, egtea.videos, tmp_path,
                            verb_idx=egtea.verb_idx, **FAST)
    assert summary.counts == {'rows': 4, 'videos': 2, 'clips written': 3, 'actions seen': 4}
    (skip,) = skipped_rows(tmp_path)
    assert (skip['line'], skip['reason']) == ('4', 'missing video')
    assert skip['video_id'] == fx.EGTEA_CLIPS[3][0]

    clips = decoded(tmp_path)
    assert list(clips) == [clip[0] for clip in fx.EGTEA_CLIPS[:3]]
    names = ['open drawer', 'take knife', 'wash plate', 'close fridge']
    for clip_id, action, verb, noun, num_frames in fx.EGTEA_CLIPS[:3]:
        clip = clips[clip_id]
        assert clip['labels'] == {'action': action - 1, 'verb': verb - 1, 'noun': noun - 1}
        assert clip['narration'] == names[action - 1]
        assert (clip['video_id'], clip['source']) == ('-'.join(clip_id.split('-')[:3]),
                                                      'egtea')
        duration = num_frames / fx.FPS  # the whole trimmed clip
        assert (clip['start'], clip['end']) == pytest.approx((0.0, duration))
        assert frame_indices(clip) == [round(duration * fraction * fx.FPS)
                                       for fraction in (0.25, 0.75)]

    classes = read_classes(tmp_path)
    assert classes.names == {'action': names, 'verb': ['open', 'take', 'wash', 'close'],
                             'noun': ['1', '2', '3', '4']}
    assert classes.action_to_verb is None and classes.action_to_noun is None
    assert classes.source == 'action_idx.txt'


def test_egtea_input_errors_name_the_line(egtea, tmp_path):
    split = tmp_path / 'split.txt'
    split.write_text(f'{fx.EGTEA_CLIPS[0][0]} 1 1 1\n{fx.EGTEA_CLIPS[1][0]} 9 1 1\n')
    with pytest.raises(ValueError, match=r'split\.txt, line 2: unknown class 9; the action '
                                         r'list defines 1\.\.4'):
        convert_egtea(split, egtea.action_idx, egtea.videos, tmp_path / 'out', **FAST)
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------- commands

def run_records(*args):
    return subprocess.run([sys.executable, '-m', 'egovideo_jax.records', *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_convert_epic_and_inspect_commands(epic, tmp_path):
    out = tmp_path / 'records'
    result = run_records(
        'convert-epic', epic.train_csv, '--video-root', epic.videos, '--out', out,
        '--verb-classes', epic.verb_classes, '--noun-classes', epic.noun_classes,
        '--sentences', epic.sentences_csv, '--relevancy', epic.relevancy_pkl,
        '--frames-per-clip', 2, '--short-side', 24, '--workers', 2, '--format', 'arrayrecord',
        '--max-skip-fraction', 0.2)
    assert result.returncode == 0, result.stderr
    for line in ('wrote 5 clips in 1 shards', 'skipped 1 of 6 rows (16.7%)',
                 'missing video: 1', 'clips without an action label: 0',
                 'clips whose own narration was added: 1', 'captions stored: 11',
                 'classes: verb 4, noun 4, action 4', f'class names in {out}/classes.json'):
        assert line in result.stdout, line
    assert 'clip/s' in result.stderr  # progress bar
    with open(out / 'manifest.json') as file:
        manifest = json.load(file)
    assert manifest['format'] == 'arrayrecord'
    assert manifest['producer']['command'].startswith(
        'python -m egovideo_jax.records convert-epic')
    assert manifest['producer']['config']['relevancy'] == str(epic.relevancy_pkl)

    result = run_records('inspect', out, '--record', 2, '--verify')
    assert result.returncode == 0, result.stderr
    assert 'label fields: labels/verb, labels/noun, labels/action, captions/text' in \
        result.stdout
    assert 'classes (classes.json, from EPIC_100_train.csv): verb 4, noun 4, action 4' in \
        result.stdout
    assert 'clip P02_03_0' in result.stdout
    assert 'labels: verb 1, noun 2, action 2' in result.stdout
    assert "label names: verb 'wash', noun 'plate', action 'wash:plate'" in result.stdout
    assert "1.00 'wash plate'" in result.stdout and "0.20 'take knife'" in result.stdout
    assert 'verify: OK' in result.stdout


def test_convert_epic_command_errors(epic, tmp_path):
    header = [column if column != 'noun_class' else 'noun_id' for column in fx.EPIC_HEADER]
    bad_csv = fx.write_epic_csv(tmp_path / 'bad.csv', fx.EPIC_TRAIN, header=header)
    result = run_records('convert-epic', bad_csv, '--video-root', epic.videos,
                         '--out', tmp_path / 'out')
    assert result.returncode == 1
    assert f"error: {bad_csv}, line 1: header lacks columns ['noun_class']" in result.stderr

    result = run_records('convert-epic', epic.train_csv, '--video-root', epic.videos,
                         '--out', tmp_path / 'out', '--sentences', epic.sentences_csv)
    assert result.returncode == 1
    assert 'need both --sentences and --relevancy' in result.stderr
    assert not (tmp_path / 'out').exists()


def test_convert_egtea_and_inspect_commands(egtea, tmp_path):
    common = [egtea.split, '--action-idx', egtea.action_idx, '--video-root', egtea.videos,
              '--verb-idx', egtea.verb_idx, '--noun-idx', egtea.noun_idx,
              '--frames-per-clip', 2, '--short-side', 24, '--no-progress']
    result = run_records('convert-egtea', *common, '--out', tmp_path / 'strict')
    assert result.returncode == 1  # 1 of 4 skipped > the default 5%; the records are kept
    assert 'exceeds --max-skip-fraction 0.05' in result.stderr
    assert 'wrote 3 clips' in result.stdout and 'clip/s' not in result.stderr

    out = tmp_path / 'records'
    result = run_records('convert-egtea', *common, '--out', out, '--max-skip-fraction', 0.3)
    assert result.returncode == 0, result.stderr
    assert 'skipped 1 of 4 rows (25.0%)' in result.stdout
    assert 'classes: action 4, verb 4, noun 4' in result.stdout

    result = run_records('inspect', out, '--record', 1)
    assert result.returncode == 0, result.stderr
    assert f'clip {fx.EGTEA_CLIPS[1][0]}' in result.stdout
    assert "narration: 'wash plate'" in result.stdout
    assert 'labels: verb 2, noun 2, action 2' in result.stdout
    assert "label names: verb 'wash', noun 'plate', action 'wash plate'" in result.stdout
