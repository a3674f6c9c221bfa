"""`python -m egovideo_jax.train.memory`: the ahead-of-time memory check compiles the train
step without data or initialised parameters and reports per-device sizes.

Runs the command in subprocesses (one with 4 simulated CPU devices, set through XLA_FLAGS in
the child's environment) for the tiny model in the demo config: on 1 device and on 4 devices
with fsdp=4, where each device holds a quarter of the parameters and optimizer state.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.train_fixtures import simulated_devices_env

REPO = Path(__file__).resolve().parents[2]
TINY = ['--config=configs/cotrain.py:demo', '--config.model.variant=tiny',
        '--config.data.crop_size=32']
NUM_PARAMS_TINY_SLOWFAST = 3_401_027
FIELDS = ('argument', 'output', 'alias', 'temp', 'code', 'total')


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    """{devices: (stdout, JSON)} for 1 device and for 4 devices with fsdp=4, concurrently."""
    tmp = tmp_path_factory.mktemp('memory')
    runs = {1: TINY + ['--devices=1'], 4: TINY + ['--config.mesh.fsdp=4']}
    procs = {}
    for devices, args in runs.items():
        command = [sys.executable, '-m', 'egovideo_jax.train.memory', *args,
                   f'--json={tmp / f"memory{devices}.json"}']
        procs[devices] = subprocess.Popen(command, cwd=REPO, env=simulated_devices_env(devices),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
    results = {}
    for devices, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f'{proc.args} exited {proc.returncode}:\n{stderr[-6000:]}'
        results[devices] = (stdout, json.loads((tmp / f'memory{devices}.json').read_text()))
    return results


@pytest.mark.parametrize('devices', [1, 4])
def test_memory_report_numbers(reports, devices):
    stdout, result = reports[devices]
    assert result['num_devices'] == devices
    assert result['mesh'] == {'data': 1, 'fsdp': devices, 'tensor': 1}
    assert (result['variant'], result['mode']) == ('tiny', 'slowfast')
    assert result['num_params'] == NUM_PARAMS_TINY_SLOWFAST
    sizes = result['bytes_per_device']
    assert set(sizes) == set(FIELDS)
    for field in ('argument', 'output', 'temp', 'total'):
        assert sizes[field] > 0, (field, sizes)
    assert sizes['code'] >= 0  # XLA:CPU reports 0; accelerators report the executable
    # The donated state comes back in place: nearly all the output aliases the arguments.
    assert 0 < sizes['alias'] <= min(sizes['argument'], sizes['output'])
    assert sizes['total'] == (sizes['argument'] + sizes['output'] - sizes['alias']
                              + sizes['temp'] + sizes['code'])
    assert result['gib_per_device']['total'] == pytest.approx(sizes['total'] / 2 ** 30)
    # Arguments hold the parameters, Adam's two moments and this device's batch shard.
    params, opt = result['param_bytes_per_device'], result['opt_state_bytes_per_device']
    # Adam's moments are sharded like their parameters (plus a few scalar counters).
    assert params > 0 and 2 * params <= opt <= 2 * params + 1024
    assert params + opt <= sizes['argument']
    assert result['flops_per_device'] > 0
    # The printed report carries the same numbers.
    assert f"{NUM_PARAMS_TINY_SLOWFAST:,} parameters" in stdout
    for field in ('argument', 'output', 'temp', 'code', 'total'):
        match = re.search(rf'^\s+{field}\s+([0-9.]+) GiB', stdout, re.MULTILINE)
        assert match, (field, stdout)
        assert float(match.group(1)) == pytest.approx(result['gib_per_device'][field],
                                                      abs=1e-3)
    assert re.search(r'FLOPs per step per device: [0-9.e+]+', stdout), stdout


def test_fsdp_shrinks_the_per_device_state(reports):
    _, one = reports[1]
    _, four = reports[4]
    # fsdp=4 splits every `embed` axis 4 ways (the tiny model's large tensors all have one).
    assert four['param_bytes_per_device'] < 0.3 * one['param_bytes_per_device']
    assert four['opt_state_bytes_per_device'] < 0.3 * one['opt_state_bytes_per_device']
    assert four['bytes_per_device']['argument'] < 0.3 * one['bytes_per_device']['argument']
    assert four['bytes_per_device']['total'] < one['bytes_per_device']['total']
    # The same global batch: each device computes about a quarter of the step.
    assert four['flops_per_device'] < 0.5 * one['flops_per_device']
