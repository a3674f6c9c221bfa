"""Multi-device training checks, run in a subprocess by tests/parallel/test_sharding.py.

JAX fixes its device count when it first initialises, so the tests start this script with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` in the child's environment (never in the
pytest process) and read back the JSON it writes:

    python tests/helpers/train_multidevice_script.py COMMAND --out=RESULT.json [options]

COMMAND:
  specs    B/16 slowfast parameter shardings (abstract, nothing initialised) on the meshes of
           `--meshes`, unrolled and scanned: spec, shape and per-device shard shape per
           parameter.
  step     the tiny model, one train step on each mesh of `--meshes` (`1,1,1`: one device)
           from the same seed and global batch: metrics in the JSON, initial and updated
           parameters in npz files next to it.
  train    writes a tiny records dataset to `--workdir`/data and trains with `train()`
           (tiny model, `--mesh`), checkpointing at `--save_step`; dumps the train state at
           that step to `--workdir`/state_<step>.npz and the metrics of every step.
  restore  restores `--workdir`'s checkpoint `--save_step` onto `--mesh` (this process's
           devices): compares every state leaf bitwise with the npz, checks the shardings,
           and runs one more step.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `configs/` is a plain directory at the repository root
    sys.path.insert(0, str(REPO))

import jax

from configs.cotrain import get_config

MESH_NAMES = ('data', 'fsdp', 'tensor')


def parse_mesh(text: str) -> dict[str, int]:
    """'2,4,1' -> {'data': 2, 'fsdp': 4, 'tensor': 1}."""
    return dict(zip(MESH_NAMES, (int(v) for v in text.split(','))))


def spec_to_json(spec) -> list:
    return [list(entry) if isinstance(entry, tuple) else entry for entry in spec]


def leaf_paths(tree) -> dict[str, object]:
    """{'/'-joined key path: leaf} of any pytree (dicts, dataclasses, optax states)."""
    def name(entry):
        for attr in ('key', 'name', 'idx'):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = {'/'.join(name(e) for e in path): leaf for path, leaf in flat}
    assert len(named) == len(flat), 'two leaves share a name'
    return named


def num_sharded(params) -> int:
    """How many parameters are split across devices (not whole on every device)."""
    return sum(leaf.sharding.shard_shape(leaf.shape) != leaf.shape
               for leaf in jax.tree_util.tree_leaves(params))


def state_leaves(state) -> dict[str, np.ndarray]:
    return {path: np.asarray(leaf)
            for path, leaf in leaf_paths(jax.device_get(state)).items()}


# ----------------------------------------------------------------------------- specs

def command_specs(args) -> dict:
    import flax.linen as nn
    from flax import traverse_util

    from egovideo_jax.parallel.sharding import make_mesh
    from egovideo_jax.train.setup import build_module
    from egovideo_jax.train.state import abstract_params, param_shardings

    result = {}
    for mesh_text in args.meshes:
        mesh = make_mesh(parse_mesh(mesh_text))
        for scan in (False, True):
            config = get_config('b16')
            config.model.scan_layers = scan
            module = build_module(config)
            shardings = param_shardings(module, module.config, mesh)
            shapes = traverse_util.flatten_dict(
                dict(nn.unbox(abstract_params(module, module.config))))
            params = {}
            for path, where in traverse_util.flatten_dict(dict(shardings)).items():
                shape = shapes[path]
                params['/'.join(path)] = {
                    'spec': spec_to_json(where.spec), 'shape': list(shape.shape),
                    'shard_shape': list(where.shard_shape(shape.shape)),
                    'itemsize': int(np.dtype(shape.dtype).itemsize)}
            result[f'{mesh_text}/{"scan" if scan else "unrolled"}'] = params
    return result


# ----------------------------------------------------------------------------- step

def tiny_setup(scan_layers: bool, lr: float = 1e-2, eps: float = 1e-2):
    """The tiny slowfast model and the project's AdamW, at a constant rate without warm-up so
    that the first step moves the parameters (by ~lr).

    eps is large on purpose. Adam's first update is lr * g / (|g| + eps): near g = 0 it
    multiplies gradient rounding differences by lr / eps, and some gradients are zero in exact
    arithmetic but float noise in practice (the attention key biases: softmax ignores a shift
    shared by all keys). With the default eps=1e-8 those noise updates reach ~lr and differ
    between meshes; with eps=1e-2 the gain is 1 and the comparison measures the sharding."""
    import flax.linen as nn
    from ml_collections import ConfigDict

    from egovideo_jax.train.optimizer import make_optimizer
    from egovideo_jax.train.setup import build_module
    from egovideo_jax.train.state import abstract_params

    config = get_config('demo')
    config.model.variant = 'tiny'
    config.model.fast_frames = 4
    config.model.scan_layers = scan_layers
    module = build_module(config)
    optim = ConfigDict({**config.optim.to_dict(), 'total_steps': 10, 'lr': lr, 'eps': eps,
                        'warmup_steps': 0, 'schedule': 'constant'})
    tx, _ = make_optimizer(nn.unbox(abstract_params(module, module.config)), optim)
    return config, module, tx


def command_step(args) -> dict:
    """One step per mesh of `--meshes` (a mesh of n < device_count devices uses the first
    n); the initial and updated parameters go to `OUT_PREFIX-MESH-{init,params}.npz`."""
    from egovideo_jax.parallel.sharding import batch_sharding, make_mesh
    from egovideo_jax.train.state import create_train_state, make_train_step

    config, module, tx = tiny_setup(scan_layers=False)
    cfg = module.config
    size, batch = cfg.vision.image_size, args.batch
    gen = np.random.default_rng(0)
    host_batch = {
        'slow': gen.standard_normal((batch, cfg.vision.num_frames, size, size, 3), np.float32),
        'fast': gen.standard_normal((batch, cfg.fast_frames, size, size, 3), np.float32),
        'tokens': gen.integers(1, 1000, (batch, cfg.text.context_length)).astype(np.int32),
    }
    result = {}
    for mesh_text in args.meshes:
        sizes = parse_mesh(mesh_text)
        mesh = make_mesh(sizes, jax.devices()[:int(np.prod(list(sizes.values())))])
        state, shardings = create_train_state(module, cfg, tx, mesh, seed=config.seed)
        np.savez(f'{args.out_prefix}-{mesh_text}-init.npz', **state_leaves(state.params))
        step = make_train_step(module, tx, mesh, shardings)
        state, metrics = step(state, jax.device_put(host_batch, batch_sharding(mesh)))
        np.savez(f'{args.out_prefix}-{mesh_text}-params.npz', **state_leaves(state.params))
        result[mesh_text] = {
            'metrics': {k: float(v) for k, v in jax.device_get(metrics).items()},
            'num_devices': mesh.size, 'sharded_params': num_sharded(state.params),
            'specs': {path: spec_to_json(leaf.sharding.spec)
                      for path, leaf in leaf_paths(state.params).items()}}
    return result


# ----------------------------------------------------------------------------- train / restore

STORED_FRAMES, FRAME_SIZE, NUM_CLIPS = 8, 40, 16


def write_dataset(directory: Path) -> str:
    """NUM_CLIPS clips of STORED_FRAMES random 40x40 JPEG frames."""
    from egovideo_jax.records.dataset import DatasetWriter
    from egovideo_jax.records.schema import empty_tracks, encode_jpeg

    gen = np.random.default_rng(0)
    with DatasetWriter(directory, records_per_shard=8) as writer:
        for record in range(NUM_CLIPS):
            frames = [encode_jpeg(gen.integers(0, 256, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8))
                      for _ in range(STORED_FRAMES)]
            writer.add({
                'clip_id': f'clip{record}', 'video_id': f'video{record // 4}',
                'source': 'test', 'start': float(record), 'end': record + 1.0,
                'frames_jpeg': frames,
                'frame_times': np.linspace(record, record + 1, STORED_FRAMES,
                                           dtype=np.float32),
                'narration': f'C picks up object {record}',
                'hod': [f'the left hand lifts object {record}'],
                **empty_tracks(STORED_FRAMES)})
    return str(directory)


def train_config(workdir: Path, mesh: dict[str, int], total_steps: int, save_step: int):
    config = get_config('demo')
    config.model.variant = 'tiny'
    config.model.fast_frames = 4  # keeps the CPU step cheap; the fast branch still runs
    config.data.train = str(workdir / 'data')
    config.data.build_demo = False
    config.data.crop_size = 32
    config.data.batch_size = 8
    config.data.worker_count = 0
    config.total_steps = total_steps
    config.log_every = 1
    config.optim.warmup_steps = 1
    config.checkpoint.every_steps = save_step
    config.checkpoint.async_save = True
    for axis, size in mesh.items():
        config.mesh[axis] = size
    return config


def command_train(args) -> dict:
    from egovideo_jax.train.trainer import train

    workdir = Path(args.workdir)
    write_dataset(workdir / 'data')
    config = train_config(workdir, parse_mesh(args.mesh), args.total_steps, args.save_step)
    seen: dict[int, dict] = {}

    def hook(step, state, metrics):
        seen[step] = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if step == args.save_step:
            np.savez(workdir / f'state_{step}.npz', **state_leaves(state))
            seen[step]['sharded_params'] = num_sharded(state.params)

    train(config, workdir / 'run', hooks=[hook])
    return {'steps': seen}


def command_restore(args) -> dict:
    from egovideo_jax.input.pipeline import make_iterator
    from egovideo_jax.parallel.batching import global_batch
    from egovideo_jax.parallel.sharding import make_mesh
    from egovideo_jax.train.checkpoint import Checkpointer
    from egovideo_jax.train.setup import make_setup
    from egovideo_jax.train.trainer import MODEL_INPUTS, data_config_from

    workdir = Path(args.workdir)
    config = train_config(workdir, parse_mesh(args.mesh), args.total_steps, args.save_step)
    mesh = make_mesh(config.mesh)
    setup = make_setup(config, mesh, config.total_steps)
    target = setup.abstract_state
    iterator = make_iterator(data_config_from(config, config.data.train, train=True),
                             train=True, seed=config.seed)
    checkpointer = Checkpointer(workdir / 'run' / 'checkpoints', **config.checkpoint.to_dict())
    try:
        state = checkpointer.restore(args.save_step, target, iterator)
    finally:
        checkpointer.close()

    saved = np.load(workdir / f'state_{args.save_step}.npz')
    restored = state_leaves(state)
    mismatched = sorted(
        path for path in set(saved.files) | set(restored)
        if path not in saved.files or path not in restored
        or saved[path].dtype != restored[path].dtype
        or saved[path].shape != restored[path].shape
        or saved[path].tobytes() != restored[path].tobytes())
    wrong_sharding = sorted(
        path for (path, leaf), want in zip(leaf_paths(state).items(),
                                           jax.tree_util.tree_leaves(target))
        if not leaf.sharding.is_equivalent_to(want.sharding, leaf.ndim))

    local = next(iterator)
    state, metrics = setup.step(state, global_batch(
        {k: local[k] for k in MODEL_INPUTS if k in local}, mesh))
    return {
        'num_leaves': len(restored), 'num_params': len(leaf_paths(state.params)),
        'mismatched': mismatched, 'wrong_sharding': wrong_sharding,
        'sharded_params': num_sharded(state.params),
        'next_step': int(jax.device_get(state.step)),
        'next_metrics': {k: float(v) for k, v in jax.device_get(metrics).items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command', choices=('specs', 'step', 'train', 'restore'))
    parser.add_argument('--out', required=True, help='result JSON')
    parser.add_argument('--out-prefix', default='', help='step: npz files start with this')
    parser.add_argument('--devices', type=int, required=True,
                        help='expected jax.device_count() (set by XLA_FLAGS)')
    parser.add_argument('--meshes', nargs='*', default=['8,1,1'])
    parser.add_argument('--mesh', default='-1,1,1')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--workdir', default='')
    parser.add_argument('--total_steps', type=int, default=3)
    parser.add_argument('--save_step', type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == 'step' and not args.out_prefix:
        parser.error('step needs --out-prefix (where its npz files go)')
    if args.command in ('train', 'restore') and not args.workdir:
        parser.error(f'{args.command} needs --workdir')
    if jax.device_count() != args.devices:
        raise SystemExit(f'expected {args.devices} devices, JAX has {jax.device_count()}; '
                         f'XLA_FLAGS={os.environ.get("XLA_FLAGS")!r}')
    result = {'specs': command_specs, 'step': command_step, 'train': command_train,
              'restore': command_restore}[args.command](args)
    Path(args.out).write_text(json.dumps(result))


if __name__ == '__main__':
    main()
