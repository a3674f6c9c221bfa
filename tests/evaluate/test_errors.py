"""Malformed benchmark inputs fail with errors that name the file and the row (or item).

Annotation files are checked by `prepare()`, before any model work."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from egovideo_jax.evaluate import epic
from egovideo_jax.evaluate.registry import build_evaluators
from tests.helpers.eval_fixtures import (
    EPIC_HEADER,
    EPIC_TEST_CLIPS,
    FPS,
    epic_row,
    write_csv,
    write_egomcq,
    write_egtea,
    write_ek100_cls,
    write_ek100_mir,
)


def prepare(section):
    build_evaluators({section.type: section})[section.type].prepare()


def replace_line(path, number, text):
    lines = Path(path).read_text().splitlines(keepends=True)
    lines[number - 1] = text + '\n'
    Path(path).write_text(''.join(lines))


@pytest.fixture
def mir(tmp_path):
    return write_ek100_mir(tmp_path)


def test_mir_fixture_is_valid(mir):
    prepare(mir)


def test_mir_missing_video(mir):
    (Path(mir.root) / 'P02' / 'P02_03.MP4').unlink()
    with pytest.raises(ValueError, match=rf'{mir.clips_csv}, line 5: video P02_03 not found; '
                                         r'looked for .*P02_03\.mp4 and .*P02_03\.MP4'):
        prepare(mir)


def test_mir_relevancy_shape_checked_against_the_csvs(mir):
    with open(mir.relevancy_pkl, 'wb') as file:
        pickle.dump(np.zeros((6, 4)), file)
    with pytest.raises(ValueError, match=rf'{mir.relevancy_pkl}: relevancy has shape \(6, 4\), '
                                         rf'expected \(6, 5\)'):
        prepare(mir)


def test_mir_relevancy_pickle_must_be_only_an_array(mir):
    with open(mir.relevancy_pkl, 'wb') as file:
        pickle.dump({'matrix': np.zeros((6, 5))}, file)
    with pytest.raises(ValueError, match=rf'{mir.relevancy_pkl}: holds a dict'):
        prepare(mir)


def test_mir_malformed_timestamp(mir):
    row = epic_row(*EPIC_TEST_CLIPS[2])
    row[4] = 'soon'
    replace_line(mir.clips_csv, 4, ','.join(map(str, row)))
    with pytest.raises(ValueError, match=rf"{mir.clips_csv}, line 4: timestamp 'soon'"):
        prepare(mir)


def test_mir_row_with_missing_fields(mir):
    replace_line(mir.clips_csv, 3, 'P01_01_1,P01,P01_01')
    with pytest.raises(ValueError, match=rf'{mir.clips_csv}, line 3: 3 fields, the header has 15'):
        prepare(mir)


def test_mir_non_integer_class(mir):
    row = epic_row(*EPIC_TEST_CLIPS[0])
    row[10] = 'open'
    replace_line(mir.clips_csv, 2, ','.join(map(str, row)))
    with pytest.raises(ValueError, match=rf'{mir.clips_csv}, line 2: invalid literal'):
        prepare(mir)


def test_mir_header_without_official_columns(mir):
    replace_line(mir.clips_csv, 1, ','.join(EPIC_HEADER).replace('stop_timestamp', 'end'))
    with pytest.raises(ValueError, match=rf"{mir.clips_csv}, line 1: header lacks columns "
                                         r"\['stop_timestamp'\]"):
        prepare(mir)


def test_mir_unknown_sentence_id(mir):
    replace_line(mir.sentences_csv, 3, 'P09_99_1,take knife')
    with pytest.raises(ValueError, match=rf"{mir.sentences_csv}, line 3: narration_id "
                                         r"'P09_99_1' is not a clip of"):
        prepare(mir)


def test_epic_clip_past_its_video_names_the_row(mir):
    clip = epic.read_epic_csv(mir.clips_csv)[0]
    late = epic.EpicClip(**{**clip.__dict__, 'start_seconds': 9.0, 'stop_seconds': 9.5})
    loader = epic.ClipLoader([4], 32)
    with pytest.raises(ValueError, match=rf'{mir.clips_csv}, line 2: the clip starts at frame '
                                         rf'{9 * FPS}, past the end'):
        loader((late, Path(mir.root) / 'P01_01.mp4'))


def test_cls_unknown_class(tmp_path):
    cls = write_ek100_cls(tmp_path)
    cls.eval_csv = str(write_csv(tmp_path / 'my_eval.csv', EPIC_HEADER, [
        epic_row(*EPIC_TEST_CLIPS[0]),
        epic_row('P01_01_7', 'P01_01', 0.0, 1.0, 'juggle eggs', 'juggle', 99, 'egg', 98)]))
    with pytest.raises(ValueError, match=rf'{cls.eval_csv}, line 3: unknown class 99:98'):
        prepare(cls)


@pytest.fixture
def egtea(tmp_path):
    return write_egtea(tmp_path)


def test_egtea_unknown_class_in_test_split(egtea):
    replace_line(egtea.test_split, 2, 'OP01-R01-PastaSalad-3000-3400-F000090-F000102 9 1 1')
    with pytest.raises(ValueError, match=rf'{egtea.test_split}, line 2: unknown class 9; '
                                         r'.*action_idx.txt defines 1\.\.4'):
        prepare(egtea)


def test_egtea_malformed_action_line(egtea):
    replace_line(egtea.action_idx, 3, 'Wash plate 3')
    with pytest.raises(ValueError, match=rf'{egtea.action_idx}, line 3: expected '
                                         r'"Name_With_Underscores idx"'):
        prepare(egtea)


def test_egtea_missing_video(egtea):
    clip_id = 'P20-R03-BaconAndEggs-520-910-F000015-F000027'
    (Path(egtea.root) / 'P20-R03-BaconAndEggs' / f'{clip_id}.mp4').unlink()
    with pytest.raises(ValueError, match=rf'{egtea.test_split}, line 3: video not found: '
                                         rf'.*{clip_id}\.mp4'):
        prepare(egtea)


@pytest.fixture
def egomcq(tmp_path):
    return write_egomcq(tmp_path)


def test_egomcq_missing_video(egomcq):
    chunk = Path(egomcq.root) / '9f1e0c3a-bbbb-2222' / '0000.mp4'
    chunk.unlink()
    with pytest.raises(ValueError, match=rf'{egomcq.json}, item "0", choice 1: video chunk not '
                                         rf'found: {chunk}'):
        prepare(egomcq)


def test_egomcq_malformed_item(egomcq):
    items = json.loads(Path(egomcq.json).read_text())
    del items['1']['answer']
    items['2']['choices']['4']['clip_end'] = 'later'
    Path(egomcq.json).write_text(json.dumps(items))
    with pytest.raises(ValueError, match=rf"{egomcq.json}, item \"1\": missing \['answer'\]"):
        prepare(egomcq)
    items['1']['answer'] = 2
    Path(egomcq.json).write_text(json.dumps(items))
    with pytest.raises(ValueError, match=rf'{egomcq.json}, item "2", choice 4: clip_start/'
                                         r"clip_end must be numbers, got 3.0, 'later'"):
        prepare(egomcq)


def test_egomcq_invalid_json(egomcq):
    Path(egomcq.json).write_text('{\n "0": {"query": \n')
    with pytest.raises(ValueError, match=rf'{egomcq.json}, line 3: not valid JSON'):
        prepare(egomcq)
