"""`python -m egovideo_jax.evaluate` end to end in a subprocess (one benchmark, tiny model)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.eval_fixtures import write_egtea

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_cli_runs_a_benchmark(tmp_path):
    section = write_egtea(tmp_path / 'egtea')
    workdir = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, '-m', 'egovideo_jax.evaluate', '--config=configs/eval.py:egtea',
         f'--workdir={workdir}', '--config.variant=tiny', '--config.mode=single',
         f'--config.egtea.root={section.root}', f'--config.egtea.action_idx={section.action_idx}',
         f'--config.egtea.test_split={section.test_split}', '--config.egtea.batch_size=4',
         '--config.egtea.num_frames=4'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'randomly initialised' in result.stderr
    assert 'egtea (egtea)' in result.stdout and 'mean_class_acc' in result.stdout
    saved = json.loads((workdir / 'egtea' / 'metrics.json').read_text())
    assert saved['benchmark'] == 'egtea'
    assert set(saved['metrics']) == {'top1', 'mean_class_acc'}
    assert all(0 <= value <= 100 for value in saved['metrics'].values())
