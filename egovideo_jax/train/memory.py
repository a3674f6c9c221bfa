"""Ahead-of-time compile check: will this config's train step fit on the target devices, and
how fast does the compiler think it runs?

    python -m egovideo_jax.train.memory --config=configs/cotrain.py:b16 \\
        [--config.a.b=value ...] [--topology=v5p:4x4x2 [--num_slices=2]] [--devices=N] \\
        [--json=PATH]

Builds the train setup *abstractly* (train/setup.py: shapes, dtypes and shardings only; no
parameter is initialised and no data is read), lowers and compiles the jitted train step for
a global batch of `config.data.batch_size` clips on a mesh (`config.mesh`) of

- `--topology=NAME`: the chips of a TPU slice, compiled by the real TPU compiler (libtpu)
  without the hardware: `pip install -r requirements-tpu-aot.txt` on any machine, then names
  like `v4:2x2x1`, `v5e:4x4`, `v5e:8x8`, `v5p:2x2x2`, `v5p:4x4x2`, `v6e:8x8`;
  `--num_slices=N` compiles for N such slices joined over the data-centre network (the mesh's
  `data` axis spans the slices);
- otherwise the local devices (`--devices` picks how many). On CPU the layout is faithful but
  temp and code sizes are the CPU compiler's; simulate more CPU devices with
  `XLA_FLAGS=--xla_force_host_platform_device_count=N` (set before JAX starts).

It prints (and `--json` writes) per device what `compiled.memory_analysis()` reports:

  argument    the step's inputs: parameters, optimizer state and the device's batch shard
  output      the new state and the metrics (donated: the state reuses the argument buffers,
              the `alias` bytes; `total` counts them once)
  temp        activations kept for the backward pass and every other scratch buffer
  code        the generated executable
  total       argument + output - alias + temp + code: the peak a device must hold

with the chip's HBM and `fits` (total <= 90% of HBM; a compile the compiler refuses for lack
of memory is reported as `fits: false` with its message, not raised); the analytic model
FLOPs of one step (train/flops.py); XLA's own FLOP count per device (`flops_per_device`: it
counts a scanned layer stack once and Pallas kernels not at all, so it is no basis for MFU);
and the compiler's step-time estimate (`cost_analysis()['optimal_seconds']`, TPU only; it also
leaves Pallas kernels such as splash attention out, so it is optimistic) with the MFU it would
imply. Only the data-path fields of `validate()` are skipped; every other config check runs.
"""
from __future__ import annotations

import math
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from egovideo_jax.io.atomic import write_json_atomically

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/cotrain.py:b16',
                                          'training config file[:variant[,stage]]')
_DEVICES = flags.DEFINE_integer('devices', None,
                                'use the first N local devices for the mesh (default: all)')
_TOPOLOGY = flags.DEFINE_string('topology', None,
                                'compile for this TPU slice (e.g. v5p:4x4x2) instead of the '
                                'local devices; needs requirements-tpu-aot.txt')
_NUM_SLICES = flags.DEFINE_integer('num_slices', 1, 'with --topology: this many slices')
_JSON = flags.DEFINE_string('json', None, 'also write the numbers to this JSON file')

GIB = 1024 ** 3
FIT_FRACTION = 0.9  # a step "fits" when it needs at most this much of a chip's HBM
MEMORY_FIELDS = (('argument', 'argument_size_in_bytes'), ('output', 'output_size_in_bytes'),
                 ('alias', 'alias_size_in_bytes'), ('temp', 'temp_size_in_bytes'),
                 ('code', 'generated_code_size_in_bytes'))
_OUT_OF_MEMORY = ('RESOURCE_EXHAUSTED', 'Ran out of memory', 'out of memory')
TPU_AOT_HINT = ('compiling for a TPU topology needs libtpu: pip install -r '
                'requirements-tpu-aot.txt (pinned to the installed jax)')


def topology_devices(name: str, num_slices: int = 1) -> list:
    """Compile-only devices of `num_slices` TPU slices of topology `name` (e.g. 'v5p:2x2x2')."""
    # libtpu locks /tmp/libtpu_lockfile per process; compile-only use may share it.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
    from jax.experimental import topologies
    if num_slices < 1:
        raise ValueError(f'--num_slices: expected at least 1, got {num_slices}')
    try:
        import libtpu  # noqa: F401  (only to give the install hint)
    except ImportError as error:
        raise ImportError(TPU_AOT_HINT) from error
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform='tpu',
                                                 num_slices=num_slices).devices)
    except Exception as error:
        raise ValueError(f'--topology={name!r}: libtpu cannot describe it ({error}); names '
                         'look like v4:2x2x1, v5e:4x4, v5p:2x2x2, v6e:8x8') from error


def _validate_without_data(config, num_devices: int):
    """`validate()` minus the data-path checks (this tool reads no data)."""
    from egovideo_jax.train.config_checks import validate
    checked = config.copy_and_resolve_references()
    with checked.unlocked():
        checked.data.build_demo = True  # validate() skips data.train when a demo is built
    validate(checked, num_devices=num_devices)


def _per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
    import jax
    import numpy as np
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree_util.tree_leaves(tree))


def analyze(config, devices=None, topology: str | None = None) -> dict:
    """Compiles (never runs) the train step of `config` on a mesh of `devices` (default: all
    local devices) and returns the per-device memory and cost figures. A compile refused for
    lack of device memory gives `fits: False` and the compiler's `error`."""
    import jax
    import numpy as np

    from egovideo_jax.parallel import sharding
    from egovideo_jax.train.metrics import compiled_flops, cost_analysis, hbm_bytes, peak_flops
    from egovideo_jax.train.setup import abstract_batch, make_setup
    from egovideo_jax.train.tasks import task_of

    devices = list(jax.local_devices() if devices is None else devices)
    _validate_without_data(config, len(devices))
    mesh = sharding.make_mesh(config.mesh, devices)
    # The schedule's length changes no buffer; without data, epochs cannot be converted.
    total_steps = config.total_steps if config.total_steps > 0 else max(
        config.optim.warmup_steps + 1, 1000)
    setup = make_setup(config, mesh, total_steps)
    state = setup.abstract_state
    device = devices[0]
    # Per-chip figures; TPU cores listed separately share their chip's HBM and peak.
    cores = sharding.cores_per_device_chip(devices)
    peak, hbm = peak_flops(device), hbm_bytes(device)
    peak = peak / cores if peak else None
    hbm = hbm // cores if hbm else None
    model_flops = task_of(config).model_flops().total
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(
        state.params))
    result = {
        'variant': config.model.variant, 'mode': config.model.mode, 'stage': config.stage,
        'topology': topology, 'num_slices': len({getattr(d, 'slice_index', 0) or 0
                                                 for d in devices}),
        'platform': device.platform, 'device_kind': device.device_kind,
        'num_devices': len(devices), 'devices_per_chip': cores, 'mesh': dict(mesh.shape),
        'global_batch': config.data.batch_size, 'crop_size': config.data.crop_size,
        'dtype': config.model.dtype, 'remat_policy': config.model.remat_policy,
        'attention': config.model.attention, 'scan_layers': config.model.scan_layers,
        'grad_accum_steps': config.optim.grad_accum_steps,
        'num_params': num_params,
        'param_bytes_per_device': _per_device_bytes(state.params),
        'opt_state_bytes_per_device': _per_device_bytes(state.opt_state),
        'hbm_bytes_per_device': hbm,
        'model_flops_per_step': model_flops,
        'peak_flops_per_device': peak,
    }
    started = time.perf_counter()
    try:
        compiled = setup.step.lower(state, abstract_batch(config, setup.model_config,
                                                          mesh)).compile()
    except Exception as error:
        if not any(marker in str(error) for marker in _OUT_OF_MEMORY):
            raise
        return {**result, 'compile_seconds': time.perf_counter() - started, 'fits': False,
                'error': str(error).strip()[:4000], 'bytes_per_device': None,
                'gib_per_device': None, 'flops_per_device': None,
                'compiler_step_seconds': None, 'compiler_mfu': None}
    compile_seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    if memory is None:
        raise RuntimeError(f'the {device.platform} backend reports no memory analysis')
    sizes = {name: int(getattr(memory, field, 0) or 0) for name, field in MEMORY_FIELDS}
    sizes['total'] = (sizes['argument'] + sizes['output'] - sizes['alias'] + sizes['temp']
                      + sizes['code'])
    seconds = cost_analysis(compiled).get('optimal_seconds')
    seconds = seconds if seconds and seconds > 0 else None  # libtpu gives -4 when it has none
    return {
        **result, 'compile_seconds': compile_seconds,
        'bytes_per_device': sizes,
        'gib_per_device': {name: value / GIB for name, value in sizes.items()},
        'fits': None if hbm is None else sizes['total'] <= FIT_FRACTION * hbm,
        'hbm_used_fraction': None if hbm is None else sizes['total'] / hbm,
        'error': None,
        'flops_per_device': compiled_flops(compiled),
        'compiler_step_seconds': seconds,
        # A scanned layer stack is one while loop: the estimate counts its body once.
        'compiler_counts_scanned_layers_once': bool(config.model.scan_layers),
        'compiler_mfu': (model_flops / len(devices) / seconds / peak
                         if seconds and peak and not config.model.scan_layers else None),
    }


def _gib(value) -> str:
    return 'unknown' if value is None else f'{value / GIB:.2f} GiB'


def report(result: dict) -> str:
    mesh = ' x '.join(f'{axis}={size}' for axis, size in result['mesh'].items())
    target = (f"topology {result['topology']}"
              + (f" x {result['num_slices']} slices" if result['num_slices'] > 1 else '')
              if result['topology'] else 'local devices')
    lines = [
        f"{result['variant']} {result['mode']} ({result['stage']}): {result['num_params']:,} "
        f"parameters; global batch {result['global_batch']} at {result['crop_size']} px, "
        f"{result['dtype']}, attention {result['attention']}, remat {result['remat_policy']}, "
        f"grad accumulation {result['grad_accum_steps']}",
        f"mesh {mesh} on {result['num_devices']} x {result['device_kind']} "
        f"({result['platform']}, {target}); HBM per device {_gib(result['hbm_bytes_per_device'])}",
        f"per device: parameters {result['param_bytes_per_device'] / GIB:.3f} GiB, optimizer "
        f"state {result['opt_state_bytes_per_device'] / GIB:.3f} GiB",
        f"model FLOPs per step (analytic, whole batch): {result['model_flops_per_step']:.4g}",
    ]
    if result['error']:
        lines += [f"fits: False (compile refused after {result['compile_seconds']:.0f} s):",
                  '  ' + result['error'].splitlines()[0][:600]]
        return '\n'.join(lines)
    gib = result['gib_per_device']
    lines += [
        f"  argument {gib['argument']:9.3f} GiB  (parameters + optimizer state + batch shard)",
        f"  output   {gib['output']:9.3f} GiB  (of which {gib['alias']:.3f} GiB reuse the "
        f"donated arguments)",
        f"  temp     {gib['temp']:9.3f} GiB  (activations, gradients, scratch)",
        f"  code     {gib['code']:9.3f} GiB",
        f"  total    {gib['total']:9.3f} GiB",
    ]
    if result['fits'] is None:
        lines.append("fits: unknown (this device's memory size is not known)")
    else:
        lines.append(f"fits: {result['fits']} ({result['hbm_used_fraction']:.1%} of HBM; "
                     f"the limit is {FIT_FRACTION:.0%})")
    flops = result['flops_per_device']
    lines.append(f'FLOPs per step per device: {flops:.4g} (XLA count: scanned layers once, '
                 'no Pallas kernels)' if flops else
                 'FLOPs per step per device: not reported by this backend')
    if result['compiler_step_seconds']:
        mfu = result['compiler_mfu']
        lines.append(f"compiler's step-time estimate: {result['compiler_step_seconds']:.4g} s"
                     + (f" -> MFU {mfu:.1%} if it held (leaves Pallas kernels out)" if mfu
                        else ' (scan_layers: the layer loop counted once, so no step time; '
                        'compile with --config.model.scan_layers=False for one)'))
    lines.append(f"compiled in {result['compile_seconds']:.0f} s")
    return '\n'.join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)
    if _TOPOLOGY.value:
        if _DEVICES.value is not None:
            raise app.UsageError('--devices and --topology exclude each other')
        devices = topology_devices(_TOPOLOGY.value, _NUM_SLICES.value)
    else:
        if _NUM_SLICES.value != 1:
            raise app.UsageError('--num_slices needs --topology')
        import jax
        devices = jax.local_devices()
        if _DEVICES.value is not None:
            if not 1 <= _DEVICES.value <= len(devices):
                raise app.UsageError(
                    f'--devices={_DEVICES.value}, but {len(devices)} local device(s) are '
                    'present; on CPU, simulate more with '
                    'XLA_FLAGS=--xla_force_host_platform_device_count=N')
            devices = devices[:_DEVICES.value]
    print(f'compiling the train step for {len(devices)} x {devices[0].device_kind} ...',
          flush=True)
    result = analyze(_CONFIG.value, devices, topology=_TOPOLOGY.value)
    print(report(result))
    if _JSON.value:
        write_json_atomically(_JSON.value, result)


if __name__ == '__main__':
    app.run(main)
