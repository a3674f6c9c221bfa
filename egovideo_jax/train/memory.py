"""Ahead-of-time memory check: will this config's train step fit on the target devices?

    python -m egovideo_jax.train.memory --config=configs/cotrain.py:b16 \\
        [--config.a.b=value ...] [--devices=N] [--json=PATH]

Builds the model, the optimizer and the train state *abstractly* (shapes, dtypes and
shardings only; no parameter is initialised and no data is read), lowers and compiles the
jitted train step (`egovideo_jax.train.state.make_train_step`) for a global batch of
`config.data.batch_size` clips on a mesh of the local devices (`config.mesh`), and prints
what XLA's `compiled.memory_analysis()` reports per device, without running anything:

  argument    the step's inputs: parameters, optimizer state and the device's batch shard
  output      the new state and the metrics (donated: the state reuses the argument buffers,
              the `alias` bytes; `total` counts them once)
  temp        activations kept for the backward pass and every other scratch buffer
  code        the generated executable
  total       argument + output - alias + temp + code: the peak a device must hold

plus the parameter count, the per-device parameter bytes under the sharding rules and the
FLOPs of one step per device (`compiled.cost_analysis()`). `--json PATH` writes the same
numbers. Only the data-path fields of `validate()` are skipped; every other config check
(crop size vs model, batch divisibility by the mesh, ...) runs.

The numbers belong to the backend that compiled the step. To size a run for H100s or TPU
v5p, run this on one host of that type, with that accelerator's JAX backend installed
(`jax[cuda12]`, `jax[tpu]`); `--devices` picks how many of its local devices form the mesh.
Compiled on CPU, the layout is faithful (which arrays are sharded how, per-device argument
bytes) but temp and code sizes are the CPU compiler's, not the accelerator's. Simulating a
larger mesh on CPU works by starting Python with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (it must be set before JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        python -m egovideo_jax.train.memory --config=configs/cotrain.py:b16 \\
        --config.mesh.fsdp=8 --config.mesh.data=1
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/cotrain.py:b16',
                                          'training config file[:variant[,stage]]')
_DEVICES = flags.DEFINE_integer('devices', None,
                                'use the first N local devices for the mesh (default: all)')
_JSON = flags.DEFINE_string('json', None, 'also write the numbers to this JSON file')

GIB = 1024 ** 3
MEMORY_FIELDS = (('argument', 'argument_size_in_bytes'), ('output', 'output_size_in_bytes'),
                 ('alias', 'alias_size_in_bytes'), ('temp', 'temp_size_in_bytes'),
                 ('code', 'generated_code_size_in_bytes'))


def _validate_without_data(config, num_devices: int):
    """`validate()` minus the data-path checks (this tool reads no data)."""
    from egovideo_jax.train.config_checks import validate
    checked = config.copy_and_resolve_references()
    with checked.unlocked():
        checked.data.build_demo = True  # validate() skips data.train when a demo is built
    validate(checked, num_devices=num_devices)


def abstract_batch(config, model_config, mesh):
    """ShapeDtypeStructs of one global batch, sharded like the trainer's batches."""
    import jax
    import jax.numpy as jnp
    from egovideo_jax.train.sharding import batch_sharding

    batch, size = config.data.batch_size, config.data.crop_size
    where = batch_sharding(mesh)

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=where)

    inputs = {'slow': spec((batch, config.model.num_frames, size, size, 3), jnp.float32),
              'tokens': spec((batch, model_config.text.context_length), jnp.int32)}
    if config.model.mode == 'slowfast':
        inputs['fast'] = spec((batch, config.model.fast_frames, size, size, 3), jnp.float32)
    return inputs


def _per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
    import jax
    import numpy as np
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree_util.tree_leaves(tree))


def analyze(config, devices=None) -> dict:
    """Compiles (never runs) the train step of `config` on a mesh of `devices` (default: all
    local devices) and returns the per-device memory and cost figures."""
    import flax.linen as nn
    import jax
    import numpy as np
    from ml_collections import ConfigDict

    from egovideo_jax.train import sharding
    from egovideo_jax.train.metrics import compiled_flops
    from egovideo_jax.train.optimizer import make_optimizer
    from egovideo_jax.train.state import (abstract_params, abstract_train_state,
                                          make_train_step)
    from egovideo_jax.train.trainer import build_module

    devices = list(jax.local_devices() if devices is None else devices)
    _validate_without_data(config, len(devices))
    mesh = sharding.make_mesh(config.mesh, devices)
    module = build_module(config)
    model_config = module.config
    params_shape = nn.unbox(abstract_params(module, model_config))
    # The schedule's length changes no buffer; without data, epochs cannot be converted.
    total_steps = config.total_steps if config.total_steps > 0 else max(
        config.optim.warmup_steps + 1, 1000)
    tx, _ = make_optimizer(params_shape, ConfigDict({**config.optim.to_dict(),
                                                    'total_steps': total_steps}))
    state = abstract_train_state(module, model_config, tx, mesh)
    shardings = jax.tree_util.tree_map(lambda leaf: leaf.sharding, state)
    step = make_train_step(module, tx, mesh, shardings, config.optim.grad_accum_steps)
    batch = abstract_batch(config, model_config, mesh)
    compiled = step.lower(state, batch).compile()

    memory = compiled.memory_analysis()
    if memory is None:
        raise RuntimeError(f'the {devices[0].platform} backend reports no memory analysis')
    sizes = {name: int(getattr(memory, field, 0) or 0) for name, field in MEMORY_FIELDS}
    sizes['total'] = (sizes['argument'] + sizes['output'] - sizes['alias'] + sizes['temp']
                      + sizes['code'])
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(
        params_shape))
    return {
        'variant': config.model.variant, 'mode': config.model.mode,
        'platform': devices[0].platform, 'device_kind': devices[0].device_kind,
        'num_devices': len(devices), 'mesh': dict(mesh.shape),
        'global_batch': config.data.batch_size, 'crop_size': config.data.crop_size,
        'dtype': config.model.dtype, 'remat_policy': config.model.remat_policy,
        'scan_layers': config.model.scan_layers,
        'grad_accum_steps': config.optim.grad_accum_steps,
        'num_params': num_params,
        'param_bytes_per_device': _per_device_bytes(state.params),
        'opt_state_bytes_per_device': _per_device_bytes(state.opt_state),
        'bytes_per_device': sizes,
        'gib_per_device': {name: value / GIB for name, value in sizes.items()},
        'flops_per_device': compiled_flops(compiled),
    }


def report(result: dict) -> str:
    mesh = ' x '.join(f'{axis}={size}' for axis, size in result['mesh'].items())
    gib = result['gib_per_device']
    flops = result['flops_per_device']
    lines = [
        f"{result['variant']} {result['mode']}: {result['num_params']:,} parameters; global "
        f"batch {result['global_batch']} at {result['crop_size']} px, {result['dtype']}, "
        f"remat {result['remat_policy']}, grad accumulation {result['grad_accum_steps']}",
        f"mesh {mesh} on {result['num_devices']} x {result['device_kind']} "
        f"({result['platform']})",
        f"per device: parameters {result['param_bytes_per_device'] / GIB:.3f} GiB, optimizer "
        f"state {result['opt_state_bytes_per_device'] / GIB:.3f} GiB",
        f"  argument {gib['argument']:9.3f} GiB  (parameters + optimizer state + batch shard)",
        f"  output   {gib['output']:9.3f} GiB  (of which {gib['alias']:.3f} GiB reuse the "
        f"donated arguments)",
        f"  temp     {gib['temp']:9.3f} GiB  (activations, gradients, scratch)",
        f"  code     {gib['code']:9.3f} GiB",
        f"  total    {gib['total']:9.3f} GiB",
        f"FLOPs per step per device: {flops:.4g}" if flops else
        'FLOPs per step per device: not reported by this backend',
    ]
    return '\n'.join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)
    import jax
    devices = jax.local_devices()
    if _DEVICES.value is not None:
        if not 1 <= _DEVICES.value <= len(devices):
            raise app.UsageError(
                f'--devices={_DEVICES.value}, but {len(devices)} local device(s) are present; '
                'on CPU, simulate more with XLA_FLAGS=--xla_force_host_platform_device_count=N')
        devices = devices[:_DEVICES.value]
    result = analyze(_CONFIG.value, devices)
    print(report(result))
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    app.run(main)
