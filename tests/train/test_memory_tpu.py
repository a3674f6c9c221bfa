"""`python -m egovideo_jax.train.memory --topology=...`: the real train step compiled by the
TPU compiler (libtpu, `requirements-tpu-aot.txt`) for compile-only TPU devices on this CPU
host. Skipped when libtpu is not installed.

Fast: the demo model on a v5p 2x2x2 slice (fits, compiler estimate, implied MFU). Slow: an
out-of-memory verdict as a result rather than a crash, two slices (tiny model), and B/16
joint as shipped (scanned, full remat, splash attention) on a v5p 2x2x2 slice.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('libtpu', reason='needs pip install -r requirements-tpu-aot.txt')

REPO = Path(__file__).resolve().parents[2]
DEMO = ['--config=configs/cotrain.py:demo']
TINY = [*DEMO, '--config.model.variant=tiny', '--config.data.crop_size=32']
GIB = 2 ** 30


def compile_for(tmp_path, *args, timeout=900) -> tuple[str, dict]:
    out = tmp_path / 'result.json'
    # libtpu allows one process at a time unless told that compile-only sharing is fine.
    env = dict(os.environ, JAX_PLATFORMS='cpu', ALLOW_MULTIPLE_LIBTPU_LOAD='1')
    done = subprocess.run([sys.executable, '-m', 'egovideo_jax.train.memory', *args,
                           f'--json={out}'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-5000:]
    return done.stdout, json.loads(out.read_text())


def test_demo_step_compiles_for_a_v5p_slice(tmp_path):
    stdout, result = compile_for(tmp_path, *DEMO, '--topology=v5p:2x2x2')
    assert (result['topology'], result['platform']) == ('v5p:2x2x2', 'tpu')
    assert result['device_kind'] == 'TPU v5' and result['num_devices'] == 8
    assert result['mesh'] == {'data': 8, 'fsdp': 1, 'tensor': 1}
    assert result['hbm_bytes_per_device'] == 95 * GIB
    sizes = result['bytes_per_device']
    assert sizes['total'] == (sizes['argument'] + sizes['output'] - sizes['alias']
                              + sizes['temp'] + sizes['code'])
    assert sizes['code'] > 0  # a real TPU executable, unlike XLA:CPU's 0
    assert result['fits'] is True and result['error'] is None
    assert result['model_flops_per_step'] > 0
    # Unrolled layers: the compiler's estimate covers the whole step and implies an MFU
    # (libtpu gives v5p estimates; for some topologies, e.g. v5e:2x2, it has none).
    assert result['compiler_step_seconds'] > 0
    assert result['compiler_mfu'] == pytest.approx(
        result['model_flops_per_step'] / 8 / result['compiler_step_seconds'] / 459e12)
    assert 'fits: True' in stdout and "compiler's step-time estimate" in stdout


@pytest.mark.slow
def test_out_of_memory_is_a_result(tmp_path):
    stdout, result = compile_for(tmp_path, *TINY, '--topology=v5e:2x2',
                                 '--config.data.batch_size=262144')
    assert result['fits'] is False
    assert result['bytes_per_device'] is None
    assert 'RESOURCE_EXHAUSTED' in result['error'] or 'memory' in result['error'].lower()
    assert 'fits: False' in stdout


@pytest.mark.slow
def test_two_slices_put_data_parallelism_across_them(tmp_path):
    _, result = compile_for(tmp_path, *TINY, '--topology=v5e:2x2', '--num_slices=2')
    assert result['num_devices'] == 8 and result['num_slices'] == 2
    assert result['mesh'] == {'data': 8, 'fsdp': 1, 'tensor': 1}
    assert result['fits'] is True


@pytest.mark.slow
def test_b16_joint_as_shipped_fits_a_v5p_slice(tmp_path):
    stdout, result = compile_for(tmp_path, '--config=configs/cotrain.py:b16',
                                 '--config.data.batch_size=256', '--topology=v5p:2x2x2',
                                 timeout=1800)
    assert (result['variant'], result['stage'], result['device_kind']) == ('B/16', 'joint',
                                                                          'TPU v5')
    assert result['attention'] == 'auto' and result['remat_policy'] == 'full'
    assert result['fits'] is True, stdout
    assert result['bytes_per_device']['total'] <= 0.9 * result['hbm_bytes_per_device']
    # Scanned layers: the compiler counts the loop once, so no MFU is derived from it.
    assert result['compiler_counts_scanned_layers_once'] and result['compiler_mfu'] is None
    assert result['model_flops_per_step'] > 1e14
