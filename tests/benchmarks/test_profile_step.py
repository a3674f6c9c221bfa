"""The step profiler runs (quick mode: the tiny variant) and accounts for the step's time."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # ~25 s: compiles and profiles the tiny step
def test_profile_step_quick(tmp_path):
    out = tmp_path / 'profile.json'
    result = subprocess.run([sys.executable, os.path.join('benchmarks', 'profile_step.py'),
                             '--quick', '--out', str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['variant'] == 'tiny' and report['remat_policy'] == 'full'
    assert report['ops'] and all(op['calls'] >= 1 and op['seconds'] >= 0 for op in report['ops'])
    assert 0 < report['leaf_ops_s'] and report['step_s'] > 0
    assert set(report['kinds_s']) and sum(report['kinds_s'].values()) <= report['leaf_ops_s'] + 1e-9
    assert 'top ops:' in result.stdout
