"""The HOD pipeline benchmark runs end to end (quick mode) and reports every setting.

No timing assertions: only that the JSON is well formed and the rates are positive.
"""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ('frames', 'detections', 'tracks', 'jpeg', 'narration', 'record')


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # ~10 s: renders 6 demo clips and runs the pipeline with 1 and 2 workers
def test_hod_pipeline_benchmark_quick(tmp_path):
    out = tmp_path / 'hod_pipeline.json'
    run = subprocess.run([sys.executable, os.path.join('benchmarks', 'hod_pipeline.py'),
                          '--quick', '--source-dir', str(tmp_path / 'source'),
                          '--work-dir', str(tmp_path / 'runs'), '--out', str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'clips/s' in run.stdout  # the table was printed

    report = json.loads(out.read_text())
    assert report['benchmark'] == 'hod_pipeline' and report['quick'] is True
    assert report['machine']['cpu_count'] >= 1 and report['machine']['platform']
    clips = report['sizes']['clips']
    render = report['render']
    assert render['clips'] == clips and positive(render['clips_per_s'])
    assert positive(render['cpu_s_per_clip']) and render['frames_per_clip'] > 0

    settings = {setting['name']: setting for setting in report['settings']}
    assert sorted(settings) == ['pipeline w=1', 'pipeline w=2']
    for name, setting in settings.items():
        assert setting['clips'] == clips and setting['skipped'] == 0, name
        assert positive(setting['clips_per_s']) and positive(setting['cpu_s_per_clip']), name
        assert setting['stages']['records']['out'] == clips, name
        assert setting['narrator']['name'] == 'rules', name
        assert setting['narrator']['primary'] == clips, name

    stages = report['stages']
    assert stages['clips'] == clips
    assert sorted(stages['wall_ms_per_clip']) == sorted(STAGES)
    assert positive(stages['total_wall_ms_per_clip'])

    # The rendered source stays in --source-dir and a second run reuses it.
    assert (tmp_path / 'source' / 'narrations.csv').exists()
    again = tmp_path / 'again.json'
    subprocess.run([sys.executable, os.path.join('benchmarks', 'hod_pipeline.py'), '--quick',
                    '--workers', '1', '--skip-stages', '--warmup', '0',
                    '--source-dir', str(tmp_path / 'source'), '--out', str(again)],
                   cwd=ROOT, check=True, capture_output=True, timeout=240)
    report = json.loads(again.read_text())
    assert report['render']['cached'] is True and report['stages'] is None
    assert [setting['name'] for setting in report['settings']] == ['pipeline w=1']
