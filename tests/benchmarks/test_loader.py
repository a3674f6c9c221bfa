"""The loader benchmark runs end to end (quick mode) and reports every setting."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = ('records w=0', 'records w=1', 'records w=2', 'mp4 train', 'mp4 load_clips')


@pytest.mark.slow  # ~40 s: builds a small dataset and times 5 settings
def test_loader_benchmark_quick(tmp_path):
    out = tmp_path / 'loader.json'
    subprocess.run([sys.executable, os.path.join('benchmarks', 'loader.py'), '--quick',
                    '--cache-dir', str(tmp_path / 'cache'), '--out', str(out)],
                   cwd=ROOT, check=True, timeout=240)
    report = json.loads(out.read_text())
    assert report['quick'] is True
    assert report['machine']['cpu_count'] >= 1 and report['machine']['platform']
    assert report['dataset']['records'] == report['sizes']['clips']
    settings = {setting['name']: setting for setting in report['settings']}
    assert sorted(settings) == sorted(SETTINGS)
    for name, setting in settings.items():
        assert setting['clips'] > 0 and setting['clips_per_s'] > 0, name
        assert setting['mb_per_s'] > 0, name
    for workers in (0, 1, 2):
        assert settings[f'records w={workers}']['worker_count'] == workers
        assert settings[f'records w={workers}']['skipped'] == 0
