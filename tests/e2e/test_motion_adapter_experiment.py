"""The motion-adapter experiment runs end to end at a tiny size and reports every condition."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import egovideo_jax

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ('all/t2v_r1', 'all/t2v_map', 'fast_motion/t2v_r1', 'fast_motion/t2v_map',
           'fast_motion/pair_accuracy')


@pytest.mark.slow  # four 2-step trainings in their own processes: a few minutes on 2 cores
def test_motion_adapter_experiment_tiny(tmp_path):
    command = [sys.executable, os.path.join('experiments', 'motion_adapter.py'),
               f'--workdir={tmp_path}', '--steps=2', '--batch-size=4', '--train-clips=16',
               '--heldout-clips=22']
    subprocess.run(command, cwd=ROOT, check=True, timeout=900)
    report = json.loads((tmp_path / 'results.json').read_text())
    conditions = ('single_4f', 'single_16f', 'slowfast_trained', 'slowfast_identity')
    assert sorted(report['summary']) == sorted(conditions)
    for condition in conditions:
        row = report['summary'][condition]
        assert all(0.0 <= row[key] <= 100.0 for key in COLUMNS), (condition, row)
        rows = [json.loads(line) for line in
                (tmp_path / f'{condition}_seed0' / 'metrics.jsonl').read_text().splitlines()]
        assert max(row['step'] for row in rows) == 2
    table = (tmp_path / 'results.md').read_text()
    assert all(f'`{condition}`' in table for condition in conditions)

    # The identity condition kept its adapters at their init (up_proj zero: the identity);
    # the trained condition moved them.
    def up_projections(condition):
        model = egovideo_jax.load(str(tmp_path / f'{condition}_seed0' / 'checkpoints' / '2'),
                                  variant='demo', mode='slowfast', verbose=False)
        visual = model.params['visual']
        return [np.asarray(visual[block]['adapter']['up_proj']['kernel'])
                for block in sorted(visual) if block.startswith('blocks_')]

    assert all(not kernel.any() for kernel in up_projections('slowfast_identity'))
    assert any(kernel.any() for kernel in up_projections('slowfast_trained'))

    # A second run re-reads the finished runs instead of training again.
    rerun = subprocess.run(command, cwd=ROOT, check=True, timeout=300, capture_output=True,
                           text=True)
    assert 'main.py' not in rerun.stdout
