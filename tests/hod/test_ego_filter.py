"""The ego-style filter stage with a scripted scorer (no model): which clips go on, the skips
and counts in the report, the scores table, resume from cached scores, unreadable clips left
to the frames stage, and a changed filter refused on restart."""
import csv
import os

import numpy as np
import pytest

from egovideo_jax.demo.source import write_demo_source
from egovideo_jax.hod import ego_filter, pipeline
from egovideo_jax.hod.options import NarratorSpec, PipelineOptions

NUM_CLIPS = 6


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp('source')
    write_demo_source(root, NUM_CLIPS, seed=1, split='train', size=32)
    table = root / 'table.csv'
    lines = (root / 'narrations.csv').read_text().splitlines()
    table.write_text('\n'.join(lines + ['missing_video,0.0,2.0,#C C takes the cup,demo'])
                     + '\n')
    probe = root / 'probe.npz'
    probe.write_bytes(b'stands for a probe file: only its hash is read here')
    options = PipelineOptions(video_root=os.fspath(root / 'videos'),
                              detection_root=os.fspath(root / 'detections'),
                              frames_per_clip=4, short_side=32)
    return table, options, probe


class ScriptedScorer:
    """Scores a clip by its mean brightness rank: deterministic, and it records its calls."""

    def __init__(self):
        self.scored = 0

    def __call__(self, clips):
        self.scored += len(clips)
        return np.array([(float(np.mean(frames)) * 7.0) % 1.0 for frames in clips])


def run(source, output_dir, scorer, threshold=0.5):
    table, options, probe = source
    found = ego_filter.EgoFilter(scorer, os.fspath(probe), threshold=threshold, batch_size=4)
    return pipeline.run_pipeline(table, output_dir, options, NarratorSpec('rules'),
                                 progress=False, ego_filter=found)


def read_scores(output_dir):
    with open(output_dir / ego_filter.CSV_NAME, newline='') as file:
        return list(csv.DictReader(file))


def test_filter_drops_low_scores_and_reports_them(source, tmp_path):
    scorer = ScriptedScorer()
    report = run(source, tmp_path / 'out', scorer)
    rows = read_scores(tmp_path / 'out')
    assert len(rows) == NUM_CLIPS + 1 and scorer.scored == NUM_CLIPS
    missing = next(row for row in rows if row['video_id'] == 'missing_video')
    assert missing['score'] == '' and missing['kept'] == '1'  # the frames stage reports it
    dropped = [row for row in rows if row['kept'] == '0']
    assert dropped and all(float(row['score']) < 0.5 for row in dropped)
    assert all(float(row['score']) >= 0.5 for row in rows if row['kept'] == '1' and row['score'])
    assert report.stages['ego_filter'] == {'in': NUM_CLIPS + 1,
                                           'out': NUM_CLIPS + 1 - len(dropped),
                                           'skipped': len(dropped)}
    assert report.clips_written == NUM_CLIPS - len(dropped)
    assert report.ego_filter['kept'] == NUM_CLIPS + 1 - len(dropped)
    assert report.ego_filter['scored'] == NUM_CLIPS
    skips = {skip.clip: skip for skip in report.skips if skip.stage == 'ego_filter'}
    assert set(skips) == {row['clip_id'] for row in dropped}
    assert all(skip.reason == ego_filter.NOT_EGOCENTRIC and '< threshold 0.5' in skip.detail
               for skip in skips.values())
    assert 'ego filter: P(egocentric) >= 0.5' in report.summary()
    assert 'ego_filter' in report.summary()


def test_restart_reuses_the_scores_and_refuses_another_threshold(source, tmp_path):
    first = run(source, tmp_path / 'out', ScriptedScorer())
    scores = read_scores(tmp_path / 'out')
    again = ScriptedScorer()
    second = run(source, tmp_path / 'out', again)
    assert again.scored == 0  # every score came from work/ego_scores.json
    assert second.clips_written == first.clips_written
    assert second.resumed == first.clips_written
    assert read_scores(tmp_path / 'out') == scores  # finished clips keep their rows
    with pytest.raises(ValueError, match='ego_filter.threshold'):
        run(source, tmp_path / 'out', ScriptedScorer(), threshold=0.9)


def test_no_filter_keeps_the_stage_out_of_the_summary(source, tmp_path):
    table, options, _ = source
    report = pipeline.run_pipeline(table, tmp_path / 'plain', options, NarratorSpec('rules'),
                                   progress=False)
    assert report.ego_filter is None
    assert report.stages['ego_filter']['skipped'] == 0
    assert 'ego_filter' not in report.summary()
    assert not (tmp_path / 'plain' / ego_filter.CSV_NAME).exists()


def test_bad_threshold_is_named():
    with pytest.raises(ValueError, match=r'ego_filter\.threshold'):
        ego_filter.EgoFilter(ScriptedScorer(), 'probe.npz', threshold=1.5)
