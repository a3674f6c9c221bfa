"""The motion-adapter experiment runs end to end at a tiny size and reports every condition."""
import json
import math
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


# Each condition trains STEPS steps on one batch of BATCH clips at a high learning rate: long
# enough for its InfoNCE loss to fall clearly below ln(BATCH), the loss of a model that cannot
# tell the pairs apart (a model that learns nothing stays there).
STEPS, BATCH, LOG_EVERY = 30, 8, 2


@pytest.mark.slow  # four 30-step trainings in their own processes: minutes on 2 cores
def test_motion_adapter_experiment_tiny(tmp_path):
    command = [sys.executable, os.path.join('experiments', 'motion_adapter.py'),
               f'--workdir={tmp_path}', f'--steps={STEPS}', f'--batch-size={BATCH}',
               f'--train-clips={BATCH}', '--heldout-clips=22',
               '--set', 'optim.lr=2e-3', 'optim.warmup_steps=2', f'log_every={LOG_EVERY}']
    subprocess.run(command, cwd=ROOT, check=True, timeout=900)
    report = json.loads((tmp_path / 'results.json').read_text())
    conditions = ('single_4f', 'single_16f', 'slowfast_trained', 'slowfast_identity')
    assert sorted(report['summary']) == sorted(conditions)
    for condition in conditions:
        row = report['summary'][condition]
        assert all(0.0 <= row[key] <= 100.0 for key in COLUMNS), (condition, row)
        rows = [json.loads(line) for line in
                (tmp_path / f'{condition}_seed0' / 'metrics.jsonl').read_text().splitlines()]
        assert max(row['step'] for row in rows) == STEPS
        losses = [row['train/loss'] for row in rows if 'train/loss' in row]
        chance = math.log(BATCH)
        assert abs(losses[0] - chance) < 0.5 * chance, (condition, losses)
        assert sum(losses[-3:]) / 3 < 0.85 * chance, (condition, losses)
    table = (tmp_path / 'results.md').read_text()
    assert all(f'`{condition}`' in table for condition in conditions)

    # The identity condition kept its adapters at their init (up_proj zero: the identity);
    # the trained condition moved them.
    def up_projections(condition):
        model = egovideo_jax.load(str(tmp_path / f'{condition}_seed0' / 'checkpoints' / str(STEPS)),
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
