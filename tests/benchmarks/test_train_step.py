"""Smoke test of benchmarks/train_step.py: it runs end to end and writes well-formed JSON.

No timing assertions: only that every reported number exists and is positive.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'benchmarks' / 'train_step.py'


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # ~35 s: compiles and times the tiny step in JAX and PyTorch
def test_train_step_benchmark_quick(tmp_path):
    out = tmp_path / 'train_step.json'
    run = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'JAX/torch' in run.stdout  # the table was printed

    report = json.loads(out.read_text())
    assert report['benchmark'] == 'train_step'
    env = report['environment']
    for key in ('jax_version', 'torch_version', 'device_kind', 'jax_backend'):
        assert isinstance(env[key], str) and env[key], key
    assert positive(env['cpu_count']) and positive(env['local_device_count'])

    settings = report['settings']
    assert settings['mode'] == 'slowfast'
    assert (settings['slow_frames'], settings['fast_frames']) == (4, 16)
    assert settings['steps'] == 2 and settings['warmup'] == 1
    assert positive(settings['batch']) and settings['batch'] >= 2

    [result] = report['results']  # --quick: tiny only
    assert result['variant'] == 'tiny' and result['batch'] == settings['batch']
    jax_result, torch_result = result['jax'], result['torch']
    for part in (jax_result, torch_result):
        for key in ('step_time_s', 'clips_per_s', 'min_step_time_s', 'mean_step_time_s',
                    'cpu_time_per_step_s', 'last_loss', 'num_params'):
            assert positive(part[key]), key
        assert len(part['step_times_s']) == 2 and all(map(positive, part['step_times_s']))
        assert len(part['warmup_step_times_s']) == 1
        assert math.isclose(part['clips_per_s'], result['batch'] / part['step_time_s'])
    for key in ('init_s', 'lower_s', 'compile_s', 'compiled_flops_per_step_per_device',
                'flops_per_step_per_device', 'flops_per_step'):
        assert positive(jax_result[key]), key
    # Model FLOPs: the analytic count (egovideo_jax/train/flops.py) of the whole batch. Not
    # compared with XLA's count here: at the tiny size the optimizer's element-wise work on
    # the 49408 x 64 token table outweighs a layer's matmuls (tests/train/test_flops.py
    # compares them at the demo and B/16 sizes).
    devices = math.prod(jax_result['mesh'].values())
    assert math.isclose(jax_result['flops_per_step'],
                        jax_result['flops_per_step_per_device'] * devices)
    assert math.isclose(sum(jax_result['flops_breakdown'].values()), jax_result['flops_per_step'])
    assert (jax_result['forward_flops_per_step'] < jax_result['flops_per_step']
            <= 3 * jax_result['forward_flops_per_step'])
    assert jax_result['dtype'] in ('float32', 'bfloat16')
    assert jax_result['remat_policy'] in ('none', 'dots_no_batch', 'full')
    assert jax_result['mfu'] is None or positive(jax_result['mfu'])
    assert positive(result['jax_over_torch_step_time'])
    assert math.isclose(result['jax_over_torch_step_time'],
                        jax_result['step_time_s'] / torch_result['step_time_s'])
