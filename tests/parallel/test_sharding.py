"""Sharding of the train state on simulated multi-device meshes.

Each check runs `tests/helpers/train_multidevice_script.py` in a subprocess whose environment sets
`XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX starts (this process never
changes its own device count) and reads back the JSON it writes.

1. Golden shardings: for the B/16 slowfast model (abstract shapes, nothing initialised) every
   parameter's PartitionSpec, unrolled and scanned, is exactly the golden table below (what
   LOGICAL_AXIS_RULES make of the model's logical axes) on the meshes data-only (8,1,1),
   fsdp (1,8,1) and fsdp+tensor (1,4,2); under data-only every device holds everything,
   under fsdp every large parameter is split and a device holds ~1/8 of the bytes.
2. One train step of the tiny model on 8 devices (meshes (8,1,1), (2,4,1), (2,2,2)) gives
   the loss, metrics and updated parameters of the same step on one device.
3. A checkpoint written by `train()` on 8 devices (fsdp=2) restores bitwise onto 4 devices
   (fsdp x tensor) and onto 1 device, into the new shardings, and training continues with the
   loss the 8-device run had at that step.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.train_fixtures import simulated_devices_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tests' / 'helpers' / 'train_multidevice_script.py'
TIMEOUT_S = 600


class Script:
    """`SCRIPT COMMAND ...` started now in a subprocess with `devices` simulated devices."""

    def __init__(self, tmp_path: Path, devices: int, args: list[str]):
        name = f'{args[0]}_{devices}_{len(list(tmp_path.glob("*.log")))}'
        self.out = tmp_path / f'{name}.json'
        self.log = open(tmp_path / f'{name}.log', 'w+')
        self.command = [sys.executable, str(SCRIPT), *args, f'--devices={devices}',
                        f'--out={self.out}']
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=simulated_devices_env(devices),
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def result(self) -> dict:
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        output = self.log.read()
        assert self.proc.returncode == 0, (f'{" ".join(self.command)} exited '
                                           f'{self.proc.returncode}:\n{output[-6000:]}')
        return json.loads(self.out.read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


STEP_MESHES = ('8,1,1', '2,4,1', '2,2,2')
ONE_DEVICE = '1,1,1'
STEP_GROUPS = ((ONE_DEVICE, STEP_MESHES[0]), STEP_MESHES[1:])  # one process each
SAVE_STEP, TOTAL_STEPS = 2, 3
MESHES = {'data': '8,1,1', 'fsdp': '1,8,1', 'fsdp_tensor': '1,4,2'}


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
    """Starts every independent subprocess of this module at once, so that they share the
    CPU cores; each fixture below waits for its own. Those still running at the end (when
    only some tests were selected) are stopped."""
    tmp = tmp_path_factory.mktemp('multidevice')
    scripts = {'specs': Script(tmp, 8, ['specs', '--meshes', *MESHES.values()])}
    for index, group in enumerate(STEP_GROUPS):
        scripts[f'step{index}'] = Script(tmp, 8, ['step', '--batch=16', '--meshes', *group,
                                                  f'--out-prefix={tmp / f"step{index}"}'])
    train_args = [f'--workdir={tmp / "work"}', f'--total_steps={TOTAL_STEPS}',
                  f'--save_step={SAVE_STEP}']
    scripts['train'] = Script(tmp, 8, ['train', '--mesh=-1,2,1', *train_args])
    yield tmp, train_args, scripts
    for script in scripts.values():
        script.stop()


# ----------------------------------------------------------------------------- 1. golden specs

MESH_SIZES = {name: dict(zip(('data', 'fsdp', 'tensor'), map(int, text.split(','))))
              for name, text in MESHES.items()}

BLOCK = r'(visual|textual)/blocks_\d+'
VISUAL_BLOCK = r'visual/blocks_\d+'
# Every parameter of B/16 slowfast (unrolled names) -> its PartitionSpec. From the rules:
# embed->fsdp, heads/mlp/adapter/vocab->tensor, kv/patch/proj/layers->unsharded.
GOLDEN = {
    rf'{BLOCK}/attn/(query|key|value)/kernel': ('fsdp', 'tensor', None),
    rf'{BLOCK}/attn/(query|key|value)/bias': ('tensor', None),
    rf'{BLOCK}/attn/out/kernel': ('tensor', None, 'fsdp'),
    rf'{BLOCK}/attn/out/bias': ('fsdp',),
    rf'{BLOCK}/mlp/fc1/kernel': ('fsdp', 'tensor'),
    rf'{BLOCK}/mlp/fc1/bias': ('tensor',),
    rf'{BLOCK}/mlp/fc2/kernel': ('tensor', 'fsdp'),
    rf'{BLOCK}/mlp/fc2/bias': ('fsdp',),
    rf'{BLOCK}/ln_[12]/(scale|bias)': ('fsdp',),
    rf'{VISUAL_BLOCK}/adapter/down_proj/kernel': ('fsdp', 'tensor'),
    rf'{VISUAL_BLOCK}/adapter/down_proj/bias': ('tensor',),
    rf'{VISUAL_BLOCK}/adapter/up_proj/kernel': ('tensor', 'fsdp'),
    rf'{VISUAL_BLOCK}/adapter/up_proj/bias': ('fsdp',),
    rf'{VISUAL_BLOCK}/adapter/dwconv/kernel': (None, None, 'tensor'),
    rf'{VISUAL_BLOCK}/adapter/conv/kernel': (None, 'fsdp', 'tensor'),
    rf'{VISUAL_BLOCK}/adapter/(dwconv|conv)/bias': ('tensor',),
    rf'{VISUAL_BLOCK}/adapter/gamma': (None,),
    r'visual/conv1/kernel': (None, 'fsdp'),
    r'visual/class_embedding': ('fsdp',),
    r'visual/(positional|temporal)_embedding': (None, 'fsdp'),
    r'visual/ln_(pre|post)/(scale|bias)': ('fsdp',),
    r'visual/image_projection': ('fsdp', None),
    r'textual/token_embedding/embedding': ('tensor', 'fsdp'),
    r'textual/positional_embedding': (None, 'fsdp'),
    r'textual/ln_final/(scale|bias)': ('fsdp',),
    r'textual/text_projection': ('fsdp', None),
    r'slowfast_projection': ('fsdp', None),
    r'logit_scale': (),
}

LARGE = 100_000


def unrolled_name(name: str) -> str:
    """'visual/blocks/attn/...' (scanned) -> 'visual/blocks_0/attn/...' for the table."""
    return re.sub(r'^(visual|textual)/blocks/', r'\1/blocks_0/', name)


def golden_spec(name: str, scanned: bool) -> list:
    matches = [spec for pattern, spec in GOLDEN.items()
               if re.fullmatch(pattern, unrolled_name(name))]
    assert len(matches) == 1, f'{name}: {len(matches)} golden entries match'
    stacked = scanned and re.match(r'(visual|textual)/blocks/', name)
    return ([None] if stacked else []) + list(matches[0])


def shards(param: dict, mesh: dict[str, int]) -> int:
    """How many pieces the parameter is cut into on `mesh`."""
    count = 1
    for entry in param['spec']:
        for axis in ([entry] if isinstance(entry, str) else entry or []):
            count *= mesh[axis]
    return count


def nbytes(param: dict, key: str = 'shape') -> int:
    return math.prod(param[key]) * param['itemsize']


@pytest.fixture(scope='module')
def b16_specs(launched):
    """{'MESH/unrolled' or 'MESH/scan': {name: {spec, shape, shard_shape, itemsize}}}."""
    return launched[2]['specs'].result()


def params_of(b16_specs, mesh: str, layout: str) -> dict[str, dict]:
    return b16_specs[f'{MESHES[mesh]}/{layout}']


@pytest.mark.parametrize('layout', ['unrolled', 'scan'])
@pytest.mark.parametrize('mesh', list(MESHES))
def test_param_specs_match_golden_table(b16_specs, mesh, layout):
    params = params_of(b16_specs, mesh, layout)
    scanned = layout == 'scan'
    # visual block 16 + adapter 9, text block 16; 9 visual, 5 text and 2 top-level others.
    assert len(params) == (25 + 16 + 16 if scanned else 12 * 25 + 12 * 16 + 16), len(params)
    wrong = {name: (p['spec'], golden_spec(name, scanned)) for name, p in params.items()
             if p['spec'] != golden_spec(name, scanned)}
    assert not wrong, f'{mesh} {layout}: (got, golden): {wrong}'
    # Spot checks named in the design, written out in full.
    block = 'blocks' if scanned else 'blocks_0'
    lead = [None] if scanned else []
    assert params[f'visual/{block}/attn/query/kernel']['spec'] == lead + ['fsdp', 'tensor', None]
    assert params['textual/token_embedding/embedding']['spec'] == ['tensor', 'fsdp']
    assert params['logit_scale']['spec'] == []
    if scanned:  # the stacked 'layers' axis is never split
        for name, p in params.items():
            if '/blocks/' in name:
                assert p['spec'][0] is None and p['shape'][0] == 12, (name, p)
                assert p['shard_shape'][0] == 12, (name, p)
    # The shard shapes are the shape divided along the named mesh axes.
    sizes = MESH_SIZES[mesh]
    for name, p in params.items():
        expected = [dim // math.prod(sizes[a] for a in ([e] if isinstance(e, str) else e or []))
                    for dim, e in zip(p['shape'], p['spec'])]
        assert p['shard_shape'] == expected, (name, p)
    if mesh == 'fsdp_tensor':
        query = params[f'visual/{block}/attn/query/kernel']
        assert query['shard_shape'] == ([12] if scanned else []) + [768 // 4, 12 // 2, 64]


@pytest.mark.parametrize('layout', ['unrolled', 'scan'])
def test_data_only_mesh_replicates_everything(b16_specs, layout):
    params = params_of(b16_specs, 'data', layout)
    split = {name: p['shard_shape'] for name, p in params.items()
             if p['shard_shape'] != p['shape']}
    assert not split, f'split under a data-only mesh: {split}'


def large_replicated(params: dict[str, dict], mesh: str) -> dict[str, int]:
    return {name: math.prod(p['shape']) for name, p in params.items()
            if math.prod(p['shape']) > LARGE and shards(p, MESH_SIZES[mesh]) == 1}


@pytest.mark.parametrize('layout', ['unrolled', 'scan'])
def test_fsdp_leaves_no_large_parameter_replicated(b16_specs, layout):
    offenders = large_replicated(params_of(b16_specs, 'fsdp', layout), 'fsdp')
    assert not offenders, f'fully replicated under fsdp (> {LARGE} elements): {offenders}'


@pytest.mark.parametrize('layout', ['unrolled', 'scan'])
def test_fsdp_device_holds_an_eighth_of_the_parameters(b16_specs, layout):
    params = params_of(b16_specs, 'fsdp', layout)
    total = sum(nbytes(p) for p in params.values())
    per_device = sum(nbytes(p, 'shard_shape') for p in params.values())
    ratio = per_device / total
    # Only the small (< 100k elements) parameters stay whole: 1/8 to within 2%.
    assert 1 / 8 <= ratio <= 1 / 8 * 1.02, f'{per_device} of {total} bytes per device'
    # fsdp (4) x tensor (2) splits 8 ways too.
    both = params_of(b16_specs, 'fsdp_tensor', layout)
    both_ratio = sum(nbytes(p, 'shard_shape') for p in both.values()) / total
    assert 1 / 8 <= both_ratio <= 1 / 8 * 1.03, both_ratio


# ----------------------------------------------------------------------------- 2. train step

TOLERANCE = 1e-5


@pytest.fixture(scope='module')
def step_results(launched):
    """{mesh: (metrics JSON, initial params, updated params)}, from two 8-device processes
    (the 1-device reference runs on the first device of one)."""
    import numpy as np
    tmp, _, scripts = launched
    merged = {}
    for index, group in enumerate(STEP_GROUPS):
        result = scripts[f'step{index}'].result()
        for mesh in group:
            prefix = tmp / f'step{index}-{mesh}'
            merged[mesh] = (result[mesh], dict(np.load(f'{prefix}-init.npz')),
                            dict(np.load(f'{prefix}-params.npz')))
    return merged


def max_diffs(a: dict, b: dict) -> dict[str, float]:
    import numpy as np
    assert set(a) == set(b)
    return {name: float(np.max(np.abs(a[name] - b[name]))) for name in a}


def test_reference_step_moves_the_parameters(step_results):
    # Else equal parameters would prove nothing: the step moves them ~1e-2, 1000x TOLERANCE.
    result, init, params = step_results[ONE_DEVICE]
    assert result['num_devices'] == 1 and result['sharded_params'] == 0
    assert len(params) == 98
    assert max(max_diffs(params, init).values()) > 100 * TOLERANCE


@pytest.mark.parametrize('mesh', STEP_MESHES)
def test_step_on_8_devices_matches_one_device(step_results, mesh):
    reference, ref_init, ref_params = step_results[ONE_DEVICE]
    result, init, params = step_results[mesh]
    assert result['num_devices'] == 8
    assert max(max_diffs(init, ref_init).values()) == 0.0  # same seed, same initial values
    metrics, expected = result['metrics'], reference['metrics']
    assert abs(metrics['loss'] - expected['loss']) < TOLERANCE, (metrics, expected)
    for name in ('v2t_accuracy', 't2v_accuracy'):
        assert metrics[name] == expected[name], name
    assert metrics['grad_norm'] == pytest.approx(expected['grad_norm'], rel=1e-5)
    far = {name: diff for name, diff in max_diffs(params, ref_params).items()
           if not diff < TOLERANCE}
    assert not far, f'{mesh}: parameters differ from the 1-device step: {far}'
    # Really distributed: the parameters live split across the devices (not under data-only).
    assert (result['sharded_params'] > 0) == (mesh != '8,1,1')
    assert result['specs']['visual/blocks_0/attn/query/kernel'] == ['fsdp', 'tensor', None]


# ----------------------------------------------------------------------------- 3. restore

@pytest.fixture(scope='module')
def restored(launched):
    """Train on 8 devices (data=4, fsdp=2), then restore step SAVE_STEP onto 4 devices
    (fsdp=2 x tensor=2) and onto 1 device, concurrently."""
    tmp, train_args, scripts = launched
    trained = scripts['train'].result()
    on_4 = Script(tmp, 4, ['restore', '--mesh=1,2,2', *train_args])
    on_1 = Script(tmp, 1, ['restore', '--mesh=1,1,1', *train_args])
    try:
        return trained, {4: on_4.result(), 1: on_1.result()}
    finally:
        on_4.stop()
        on_1.stop()


def test_training_on_8_devices_shards_parameters(restored):
    trained, _ = restored
    assert set(trained['steps']) == {str(s) for s in range(1, TOTAL_STEPS + 1)}
    assert trained['steps'][str(SAVE_STEP)]['sharded_params'] > 0


@pytest.mark.parametrize('devices', [4, 1])
def test_restore_onto_a_different_mesh_is_bitwise(restored, devices):
    trained, results = restored
    result = results[devices]
    assert result['num_leaves'] > result['num_params'] == 98  # params + optimizer state
    assert not result['mismatched'], f'differ from the saved state: {result["mismatched"]}'
    assert not result['wrong_sharding'], f'not on the new mesh: {result["wrong_sharding"]}'
    assert (result['sharded_params'] > 0) == (devices > 1)
    # One more step continues the run: same state and same next batch (the data iterator
    # was restored too) as the 8-device run's step SAVE_STEP + 1.
    assert result['next_step'] == SAVE_STEP + 1
    expected = trained['steps'][str(SAVE_STEP + 1)]['loss']
    assert abs(result['next_metrics']['loss'] - expected) < TOLERANCE, \
        (result['next_metrics'], expected)
