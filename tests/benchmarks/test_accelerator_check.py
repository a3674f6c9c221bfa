"""`benchmarks/accelerator_check.py` end to end at the demo size on the CPU (the real run is
B/16 on a GPU or TPU host): both settings time a step and count its model FLOPs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_accelerator_check_smoke_run(tmp_path):
    out = tmp_path / 'check.json'
    done = subprocess.run(
        [sys.executable, 'benchmarks/accelerator_check.py', '--config', 'demo',
         '--batch-per-device', '2', '--steps', '1', '--warmup', '0', '--remat-policy', 'none',
         '--out', str(out)], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'),
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    joint, reference = result['results']
    assert (joint['setting'], reference['setting']) == ('joint', 'reference_equivalent')
    for setting in (joint, reference):
        assert setting['step_s'] > 0 and setting['clips_per_s'] > 0
        assert setting['mfu'] is None  # no known peak for a CPU
    # Without the fast branch's backward the step does less work.
    assert reference['model_flops_per_step'] < joint['model_flops_per_step']
    assert 'reference_equivalent' in done.stdout and 'clips/s' in done.stdout
