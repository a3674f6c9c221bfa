"""`validate(config)`: reject unknown keys and impossible combinations, naming the field."""
from __future__ import annotations

import math
from pathlib import Path

from egovideo_jax.io.choices import check_choice
from egovideo_jax.model.config import MODES, VARIANTS
from egovideo_jax.model.transformer import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES

DTYPES = ('float32', 'bfloat16')


def _flat_keys(config, prefix='') -> set[str]:
    keys = set()
    for key, value in config.items():
        name = f'{prefix}{key}'
        if hasattr(value, 'items'):
            keys |= _flat_keys(value, name + '.')
        else:
            keys.add(name)
    return keys


def check_known_keys(config, reference):
    """Every (nested) key of `config` must exist in `reference` (the variant's defaults);
    `evals.*` are free-form evaluator settings."""
    unknown = sorted(k for k in _flat_keys(config) - _flat_keys(reference)
                     if not k.startswith('evals.'))
    if unknown:
        raise ValueError(f'unknown config key(s) {unknown}; see configs/cotrain.py')


def validate(config, num_devices: int, process_count: int = 1, reference=None,
             backend: str | None = None):
    """`backend` (jax.default_backend()), when given, checks back-end-specific settings."""
    if reference is not None:
        check_known_keys(config, reference)
    model, data, optim = config.model, config.data, config.optim
    check_choice(model.variant, VARIANTS, 'config.model.variant')
    check_choice(model.mode, MODES, 'config.model.mode')
    check_choice(model.dtype, DTYPES, 'config.model.dtype')
    check_choice(model.remat_policy, ('none', *REMAT_POLICIES), 'config.model.remat_policy')
    check_choice(model.attention, ATTENTION_IMPLEMENTATIONS, 'config.model.attention')
    if model.attention == 'cudnn' and backend is not None and (
            backend != 'gpu' or model.dtype != 'bfloat16'):
        raise ValueError(f"config.model.attention='cudnn' needs NVIDIA GPUs and "
                         f"config.model.dtype='bfloat16' (here: {backend}, {model.dtype}); "
                         f"use 'auto'")
    for name in ('num_frames', 'fast_frames'):
        if model[name] < 1:
            raise ValueError(f'config.model.{name} must be >= 1, got {model[name]}')
    image_size = VARIANTS[model.variant].vision.image_size
    if data.crop_size != image_size:
        raise ValueError(f'config.data.crop_size={data.crop_size} does not match the '
                         f'{model.variant} model input of {image_size} px')
    # jax-free callers may skip this part
    from egovideo_jax.parallel.sharding import BATCH_AXES, MESH_AXES, mesh_shape
    shape = dict(zip(MESH_AXES, mesh_shape(config.mesh, num_devices)))
    data_parallel = math.prod(shape[axis] for axis in BATCH_AXES)
    per_step = data_parallel * optim.grad_accum_steps
    if data.batch_size % per_step:
        raise ValueError(f'config.data.batch_size={data.batch_size} is not divisible by the '
                         f'data-parallel size {data_parallel} (mesh {shape}) x '
                         f'config.optim.grad_accum_steps={optim.grad_accum_steps}')
    if data.batch_size % process_count:
        raise ValueError(f'config.data.batch_size={data.batch_size} is not divisible by the '
                         f'{process_count} processes')
    if optim.grad_accum_steps < 1:
        raise ValueError('config.optim.grad_accum_steps must be >= 1')
    if not data.train and not data.build_demo:
        raise ValueError('config.data.train is empty: give a records directory '
                         '(--config.data.train=DIR)')
    if data.train and not Path(data.train).exists():
        raise ValueError(f'config.data.train={data.train!r} does not exist')
    if config.total_steps < 1 and config.num_epochs < 1:
        raise ValueError('set config.total_steps (>= 1) or config.num_epochs (>= 1)')
    if config.log_every < 1:
        raise ValueError(f'config.log_every must be >= 1, got {config.log_every}')
    if math.isnan(optim.lr) or optim.lr <= 0:
        raise ValueError(f'config.optim.lr must be > 0, got {optim.lr}')
    _check_task(config)


def _check_task(config):
    """The fine-tuning fields of the task `config.task` names (train/tasks.py)."""
    from egovideo_jax.train.optimizer import OPTIMIZERS
    from egovideo_jax.train.tasks import HEAD_KINDS, TASKS
    task = config.get('task', 'contrastive')
    check_choice(task, TASKS, 'config.task')
    check_choice(config.optim.get('optimizer', 'adamw'), OPTIMIZERS, 'config.optim.optimizer')
    if task == 'mir':
        if config.loss.margin <= 0:
            raise ValueError(f'config.loss.margin must be > 0, got {config.loss.margin}')
    if task == 'classification':
        head = config.head
        check_choice(head.kind, HEAD_KINDS, 'config.head.kind')
        if not 0 <= head.label_smoothing < 1:
            raise ValueError(f'config.head.label_smoothing must be in [0, 1), got '
                             f'{head.label_smoothing}')
        if not 0 <= head.dropout < 1:
            raise ValueError(f'config.head.dropout must be in [0, 1), got {head.dropout}')
        for name in ('mixup', 'cutmix'):
            if head[name] < 0:
                raise ValueError(f'config.head.{name} (the Beta alpha) must be >= 0, got '
                                 f'{head[name]}')
        if not 0 <= head.switch_prob <= 1:
            raise ValueError(f'config.head.switch_prob must be in [0, 1], got '
                             f'{head.switch_prob}')
        missing = [name for name in HEAD_KINDS[head.kind] if name not in config.data.labels]
        if missing:
            raise ValueError(f'config.head.kind={head.kind!r} trains {missing}, which '
                             f'config.data.labels={tuple(config.data.labels)} does not read')
