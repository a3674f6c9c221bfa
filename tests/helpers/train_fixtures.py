"""Shared helpers for the training tests: a tiny records dataset (and a labelled, captioned
copy of it for fine-tuning) and tiny train configs.

The dataset has `NUM_CLASSES` clip classes; every frame of a class-c clip is one solid colour
and its narrations name that colour, so text and video are learnable in a few dozen steps.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `configs/` is a plain directory at the repository root
    sys.path.insert(0, str(REPO))

from configs.cotrain import get_config
from egovideo_jax.records import dataset, schema

COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 40), 'blue': (30, 40, 220),
           'yellow': (230, 220, 30)}
NUM_CLASSES = len(COLOURS)
STORED_FRAMES, FRAME_SIZE = 8, 40


def make_clip(record: int) -> dict:
    name, rgb = list(COLOURS.items())[record % NUM_CLASSES]
    gen = np.random.default_rng(record)
    frames = []
    for _ in range(STORED_FRAMES):
        frame = np.empty((FRAME_SIZE, FRAME_SIZE, 3), np.int16)
        frame[...] = rgb
        frame += gen.integers(-8, 9, frame.shape, dtype=np.int16)  # a little noise per clip
        frames.append(schema.encode_jpeg(np.clip(frame, 0, 255).astype(np.uint8)))
    return {
        'clip_id': f'clip{record}', 'video_id': f'video{record // 4}', 'source': 'test',
        'start': float(record), 'end': record + 1.0, 'frames_jpeg': frames,
        'frame_times': np.linspace(record, record + 1, STORED_FRAMES, dtype=np.float32),
        'narration': f'everything is {name}',
        'hod': [f'a {name} scene', f'the whole frame is {name}'],
        **schema.empty_tracks(STORED_FRAMES),
    }


def write_dataset(directory, num_clips: int = 32, records_per_shard: int = 16) -> str:
    """A records dataset of `num_clips` colour clips (class = record % NUM_CLASSES)."""
    with dataset.DatasetWriter(directory, records_per_shard=records_per_shard) as writer:
        for record in range(num_clips):
            writer.add(make_clip(record))
    return str(directory)


def tiny_config(data_dir: str, *, stage: str = 'joint', total_steps: int = 6,
                checkpoint_every: int = 3, **overrides):
    """`get_config('demo[,stage]')` shrunk to the tiny model (32 px, batch 8, 4 fast frames,
    main-process decoding, a log line every step). `overrides`: {'a.b': value}."""
    config = get_config('demo' if stage == 'joint' else f'demo,{stage}')
    return shrunk(config, data_dir, total_steps, checkpoint_every, overrides)


def tiny_finetune_config(data_dir: str, task: str, *, total_steps: int = 6,
                         checkpoint_every: int = 3, **overrides):
    """`configs/finetune.py:TASK` (`demo_cls` or `demo_mir`, the slow/fast demo variant)
    shrunk as `tiny_config`, on `data_dir` (e.g. `write_labelled_dataset`), with no
    evaluators (so no best-checkpoint metric)."""
    from configs.finetune import get_config as finetune_config
    config = finetune_config(task)
    with config.unlocked():
        config.evals = ml_collections.ConfigDict()
    config.checkpoint.best_metric = ''
    return shrunk(config, data_dir, total_steps, checkpoint_every, overrides)


def shrunk(config, data_dir: str, total_steps: int, checkpoint_every: int, overrides: dict):
    """`config` with the tiny model and data settings of `tiny_config`."""
    config.model.variant = 'tiny'
    config.model.fast_frames = 4
    config.data.train = str(data_dir)
    config.data.build_demo = False
    config.data.crop_size = 32
    config.data.batch_size = 8
    config.data.worker_count = 0
    config.total_steps = total_steps
    config.log_every = 1
    # Linear warmup from 0 over 8 steps, then constant: step 1 runs at lr 0, a resume at step
    # 7 lands mid-warmup (the lr depends on the restored step count), and `total_steps` stays
    # out of the compiled step, so runs of any length share one compilation.
    config.optim.schedule = 'constant'
    config.optim.warmup_steps = 8
    config.checkpoint.every_steps = checkpoint_every
    for key, value in overrides.items():
        set_key(config, key, value)
    return config


# The label block of `write_labelled_dataset`: verb = the colour (record % 4), noun =
# (record // 4) % 3, actions the (verb, noun) pairs that occur, sorted.
LABELLED_VERBS = [f'paint {name}' for name in COLOURS]
LABELLED_NOUNS = ['cup', 'pan', 'lid']


def labelled_pair(record: int) -> tuple[int, int]:
    return record % NUM_CLASSES, (record // 4) % len(LABELLED_NOUNS)


def labelled_captions(record: int) -> list[tuple[str, float]]:
    """(text, relevancy) of clip `record`: its own narration (1.0), the next colour's (0.5),
    'a COLOUR scene' (0.3) and, for even records, the opposite colour's at 0.05 (under the
    default 0.1 threshold: never drawn)."""
    names = list(COLOURS)
    own = record % NUM_CLASSES
    captions = [(f'everything is {names[own]}', 1.0),
                (f'everything is {names[(own + 1) % NUM_CLASSES]}', 0.5),
                (f'a {names[own]} scene', 0.3)]
    if record % 2 == 0:
        captions.append((f'everything is {names[(own + 2) % NUM_CLASSES]}', 0.05))
    return captions


def write_labelled_dataset(directory, num_clips: int = 16, captions: bool = False) -> str:
    """`write_dataset`'s colour clips with the label block and classes.json (through
    `records.classes.with_labels`) and, with `captions`, `labelled_captions` per clip.
    Returns `directory/labelled` (the unlabelled source is `directory/source`)."""
    from egovideo_jax.records.classes import ClassMaps, with_labels
    directory = Path(directory)
    source = write_dataset(directory / 'source', num_clips=num_clips)
    pairs = sorted({labelled_pair(record) for record in range(num_clips)})
    classes = ClassMaps(
        names={'verb': LABELLED_VERBS, 'noun': LABELLED_NOUNS,
               'action': [f'{LABELLED_VERBS[v]}:{LABELLED_NOUNS[n]}' for v, n in pairs]},
        action_to_verb=np.array([v for v, _ in pairs]),
        action_to_noun=np.array([n for _, n in pairs]), source='tests/helpers/train_fixtures.py')
    labels = {}
    for record in range(num_clips):
        verb, noun = labelled_pair(record)
        labels[f'clip{record}'] = {'verb': verb, 'noun': noun,
                                   'action': pairs.index((verb, noun))}
    caption_table = ({f'clip{record}': labelled_captions(record) for record in range(num_clips)}
                     if captions else None)
    target = directory / 'labelled'
    with_labels(source, target, labels, classes, captions_by_clip_id=caption_table)
    return str(target)


def set_key(config, dotted: str, value):
    *parents, leaf = dotted.split('.')
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value


def read_metrics(workdir) -> list[dict]:
    """Every line of `workdir/metrics.jsonl`, parsed."""
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as file:
        return [json.loads(line) for line in file]


def losses_by_step(workdir) -> dict[int, float]:
    return {record['step']: record['train/loss'] for record in read_metrics(workdir)}


def checkpoint_steps(workdir) -> list[int]:
    directory = Path(workdir) / 'checkpoints'
    if not directory.exists():
        return []
    return sorted(int(entry.name) for entry in directory.iterdir() if entry.name.isdigit())


class Recorder:
    """Hook: the steps it saw, and host copies of the state at `capture` steps (copied at
    once: the next step donates the buffers)."""

    def __init__(self, capture=()):
        self.steps, self.states, self.capture = [], {}, set(capture)

    def __call__(self, step, state, metrics):
        self.steps.append(step)
        if step in self.capture:
            self.states[step] = host_tree(state)


def host_tree(tree):
    """A pytree of device arrays -> numpy copies (safe to keep after the buffers are donated)."""
    import jax
    return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(tree))


def restore_state(config, workdir, step: int | None = None):
    """The train state saved in `workdir` (its latest step by default), as numpy arrays."""
    import flax.linen as nn
    import orbax.checkpoint as ocp
    from ml_collections import ConfigDict

    from egovideo_jax.parallel import sharding
    from egovideo_jax.records.dataset import open_dataset
    from egovideo_jax.train.checkpoint import Checkpointer
    from egovideo_jax.train.optimizer import make_optimizer
    from egovideo_jax.train.setup import build_module
    from egovideo_jax.train.state import abstract_params, abstract_train_state
    from egovideo_jax.train.trainer import total_steps_of

    module = build_module(config)
    mesh = sharding.make_mesh(config.mesh)
    total_steps = total_steps_of(config, len(open_dataset(config.data.train)))
    optim = ConfigDict({**config.optim.to_dict(), 'total_steps': total_steps})
    tx, _ = make_optimizer(nn.unbox(abstract_params(module, module.config)), optim)
    target = abstract_train_state(module, module.config, tx, mesh)
    checkpointer = Checkpointer(Path(workdir) / 'checkpoints', every_steps=0)
    try:
        step = checkpointer.latest_step() if step is None else step
        restored = checkpointer.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))
    finally:
        checkpointer.close()
    return host_tree(restored['state'])


def assert_trees_bitwise_equal(first, second, what: str):
    import jax
    first_flat = jax.tree_util.tree_flatten_with_path(first)[0]
    second_flat = jax.tree_util.tree_flatten_with_path(second)[0]
    assert [p for p, _ in first_flat] == [p for p, _ in second_flat], f'{what}: tree structure'
    assert first_flat, f'{what}: empty tree'
    for (path, a), (_, b) in zip(first_flat, second_flat):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f'{what}{jax.tree_util.keystr(path)}'
        assert a.tobytes() == b.tobytes(), (
            f'{what}{jax.tree_util.keystr(path)} differs: max |diff| '
            f'{np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))}')


# ----------------------------------------------------------------------------- compile cache

_CACHE_DIR: str | None = None


def compile_cache_dir() -> str:
    """One persistent-compilation-cache directory per test process (removed at exit)."""
    global _CACHE_DIR
    if _CACHE_DIR is None:
        import atexit
        _CACHE_DIR = tempfile.mkdtemp(prefix='egovideo_train_tests_xla_cache_')
        atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    return _CACHE_DIR


@contextlib.contextmanager
def compile_cache():
    """JAX's persistent compilation cache for the duration of a test module.

    Every `train()` call builds a fresh jit; with the cache, runs of the same config (all
    tiny configs here use the constant schedule, so `total_steps` does not enter the HLO)
    compile once per test process, and `main.py` subprocesses reuse it through the
    JAX_COMPILATION_CACHE_DIR variable (`subprocess_env`). Restores the previous settings."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc
    names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs')
    before = {name: getattr(jax.config, name) for name in names}
    jax.config.update('jax_compilation_cache_dir', compile_cache_dir())
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    cc.reset_cache()  # the cache is set up once per process; make it see the new directory
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cc.reset_cache()


# Faster XLA:CPU compiles (LLVM optimisation off): slower code, same float semantics.
FAST_COMPILE_FLAGS = ('--xla_backend_optimization_level=0',
                      '--xla_llvm_disable_expensive_passes=true')


def simulated_devices_env(devices: int) -> dict[str, str]:
    """The environment of a child process that sees `devices` simulated CPU devices and
    compiles fast (the caller's other XLA flags kept)."""
    env = dict(os.environ)
    kept = [flag for flag in env.get('XLA_FLAGS', '').split()
            if not flag.startswith('--xla_force_host_platform_device_count')]
    env['XLA_FLAGS'] = ' '.join([*kept, *FAST_COMPILE_FLAGS,
                                 f'--xla_force_host_platform_device_count={devices}'])
    env['JAX_PLATFORMS'] = 'cpu'
    return env


def subprocess_env() -> dict:
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=compile_cache_dir(),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONUNBUFFERED='1')


def config_flags(config) -> list[str]:
    """`--config.a.b=value` flags that turn `main.py`'s `--config=configs/cotrain.py:demo`
    into `config` (every leaf that differs; lists are not supported)."""
    reference = get_config(f'{config.variant},{config.stage}')
    flat = _flatten(config.to_dict())
    base = _flatten(reference.to_dict())
    flags = [f'--config=configs/cotrain.py:{config.variant},{config.stage}']
    for key, value in flat.items():
        if value != base.get(key):
            if isinstance(value, (list, tuple)):
                raise ValueError(f'config_flags cannot pass list field {key}')
            flags.append(f'--config.{key}={value}')
    return flags


def _flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat
