"""The ego-style filter's documented commands end to end at reduced size
(docs/hod_pipeline.md, "Ego-style filter"): the demo's scenes rendered from both cameras
(`python -m egovideo_jax.demo.ego_style`), a probe over a frozen model's features fit on them
(`python -m egovideo_jax.probe`), and the HOD pipeline on the mixed held-out clips with the
filter (`python -m egovideo_jax.hod ... --config.ego_filter.probe=`).

The frozen model is the tiny one at random initialisation: its features still tell the
views apart (the side camera shows a wall, a person and a smaller table), so the probe must
beat chance on held-out scenes and the filter must keep the egocentric clips and drop the
side-camera ones. Measured: 100% held-out accuracy; egocentric scores 0.82-0.94, side-camera
0.18-0.36."""
import csv
import json
import subprocess
import sys

import pytest

import egovideo_jax
from tests.helpers.train_fixtures import REPO, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(command, timeout=600):
    result = subprocess.run([sys.executable, '-m', *command], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_probe_fit_on_both_cameras_filters_the_hod_input(tmp_path):
    data = tmp_path / 'ego_style'
    run(['egovideo_jax.demo.ego_style', f'--out={data}', '--train-clips=8',
         '--heldout-clips=4', '--size=64', '--frames-per-clip=8'])
    paths = json.loads((data / 'ego_style.json').read_text())['paths']
    checkpoint = tmp_path / 'tiny'
    egovideo_jax.load(None, variant='tiny', mode='single', verbose=False).save(checkpoint)

    def classes(split):
        return ','.join(f'{name}={paths[f"{split}_{name}"]}'
                        for name in ('egocentric', 'exocentric'))

    probe_dir = tmp_path / 'probe'
    run(['egovideo_jax.probe', f'--checkpoint={checkpoint}', '--variant=tiny', '--mode=single',
         '--clip-frames=2', '--batch-size=4', f'--train-classes={classes("train")}',
         f'--classes={classes("heldout")}', f'--out={probe_dir}'])
    metrics = json.loads((probe_dir / 'linear_probe' / 'metrics.json').read_text())
    assert metrics['metrics']['top1'] >= 87.5  # 8 held-out clips, chance 50%

    out = tmp_path / 'hod'
    result = run(['egovideo_jax.hod', '--config=configs/hod.py:epic',
                  f'--config.input_csv={paths["mixed_csv"]}',
                  f'--config.video_root={paths["mixed_videos"]}',
                  f'--config.detections.root={paths["mixed_detections"]}',
                  f'--config.ego_filter.probe={probe_dir / "linear_probe" / "probe.npz"}',
                  f'--config.output_dir={out}', '--config.visualize=0'])
    assert 'ego filter: P(egocentric) >= 0.5' in result.stdout
    with open(out / 'ego_filter.csv', newline='') as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8
    side = {row['clip_id']: row['kept'] == '1' for row in rows if '_side_' in row['video_id']}
    ego = {row['clip_id']: row['kept'] == '1' for row in rows if '_side_' not in row['video_id']}
    assert len(side) == len(ego) == 4
    assert sum(ego.values()) + sum(not kept for kept in side.values()) >= 7
    report = json.loads((out / 'report.json').read_text())
    assert report['ego_filter']['kept'] + report['ego_filter']['dropped'] == 8
    assert report['stages']['ego_filter']['skipped'] == report['ego_filter']['dropped']
    assert report['clips_written'] == report['ego_filter']['kept']
    dropped = {skip['clip'] for skip in report['skips'] if skip['reason'] == 'not egocentric'}
    assert dropped == {clip for clip, kept in {**side, **ego}.items() if not kept}
