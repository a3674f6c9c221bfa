"""AdamW or SGD with trainable subsets, per-subtree learning rates and a decay mask, by regex.

Parameter paths are '/'-joined names, e.g. `visual/blocks_3/attn/query/kernel` (unrolled) or
`visual/blocks/attn/query/kernel` (scanned). Rules are matched with `re.fullmatch`.
- `trainable`: a parameter trains if it matches one of these and none of `frozen`.
  Frozen parameters get `optax.set_to_zero()`: no optimizer state, no update.
- `lr_multipliers`: `(regex, factor)` pairs; the first match scales the schedule (default 1).
- `no_decay`: no weight decay on matches (biases, norms, embeddings, the logit scale).
- `optimizer`: 'adamw' (decoupled weight decay; co-training, MIR fine-tuning) or 'sgd'
  (momentum, weight decay added to the gradient as torch.optim.SGD; LaViLa's CLS recipes).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.traverse_util
import jax
import optax

FROZEN_LABEL = 'frozen'


def param_paths(params) -> dict[str, Any]:
    """{'/'-joined path: leaf} of a parameter tree."""
    return {'/'.join(path): leaf
            for path, leaf in flax.traverse_util.flatten_dict(dict(params)).items()}


def _map_paths(params, fn):
    flat = flax.traverse_util.flatten_dict(dict(params))
    return flax.traverse_util.unflatten_dict({path: fn('/'.join(path)) for path in flat})


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(re.fullmatch(pattern, path) for pattern in patterns)


def check_patterns(params, **patterns: Sequence[str]):
    """Every rule must match at least one parameter: a typo must not silently freeze nothing."""
    paths = list(param_paths(params))
    for field, rules in patterns.items():
        for pattern in rules:
            if not any(re.fullmatch(pattern, path) for path in paths):
                raise ValueError(f'config.optim.{field}: rule {pattern!r} matches no parameter '
                                 f'(e.g. {paths[0]!r}, {paths[-1]!r})')


def trainable_mask(params, trainable: Sequence[str], frozen: Sequence[str]):
    return _map_paths(params, lambda p: _matches(p, trainable) and not _matches(p, frozen))


def learning_rate_schedule(base_lr: float, total_steps: int, warmup_steps: int,
                           schedule: str = 'cosine', warmup_start_lr: float = 0.0,
                           end_lr: float = 0.0):
    """Linear warm-up from `warmup_start_lr` to `base_lr` over `warmup_steps`, then a cosine
    decay to `end_lr` at `total_steps` ('cosine') or `base_lr` held ('constant')."""
    schedules = {
        'cosine': lambda: optax.warmup_cosine_decay_schedule(
            warmup_start_lr, base_lr, warmup_steps, max(total_steps, warmup_steps + 1),
            end_lr),
        'constant': lambda: optax.join_schedules(
            [optax.linear_schedule(warmup_start_lr, base_lr, max(warmup_steps, 1)),
             optax.constant_schedule(base_lr)], [warmup_steps]),
    }
    if schedule not in schedules:
        raise ValueError(f'config.optim.schedule: unknown {schedule!r}; choose from '
                         f'{sorted(schedules)}')
    return schedules[schedule]()


def _adamw(learning_rate, optim, decay_mask) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                       weight_decay=optim.weight_decay, mask=decay_mask)


def _sgd(learning_rate, optim, decay_mask) -> optax.GradientTransformation:
    # torch.optim.SGD: the decay joins the gradient before the momentum buffer.
    return optax.chain(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
                       optax.sgd(learning_rate, momentum=optim.get('momentum', 0.9) or None))


OPTIMIZERS = {'adamw': _adamw, 'sgd': _sgd}  # config.optim.optimizer


def make_optimizer(params, optim) -> tuple[optax.GradientTransformation, Any]:
    """(optimizer, base learning-rate schedule) from `optim` (config.optim: optimizer, lr,
    b1, b2, eps (AdamW), momentum (SGD), weight_decay, warmup_steps, warmup_start_lr, end_lr,
    total_steps, schedule, grad_clip, trainable, frozen, lr_multipliers, no_decay; configs
    without optimizer / momentum / warmup_start_lr / end_lr get 'adamw', 0.9, 0, 0)."""
    name = optim.get('optimizer', 'adamw')
    if name not in OPTIMIZERS:
        raise ValueError(f'config.optim.optimizer: unknown {name!r}; choose from '
                         f'{sorted(OPTIMIZERS)}')
    build = OPTIMIZERS[name]
    multipliers = [tuple(rule) for rule in optim.lr_multipliers]
    check_patterns(params, trainable=optim.trainable, frozen=optim.frozen,
                   no_decay=optim.no_decay, lr_multipliers=[p for p, _ in multipliers])
    trainable = trainable_mask(params, optim.trainable, optim.frozen)

    def label(path: str) -> str:
        if not (_matches(path, optim.trainable) and not _matches(path, optim.frozen)):
            return FROZEN_LABEL
        for pattern, factor in multipliers:
            if re.fullmatch(pattern, path):
                return f'lr_x{float(factor):g}'
        return 'lr_x1'

    labels = _map_paths(params, label)
    decay_mask = _map_paths(params, lambda p: not _matches(p, optim.no_decay))
    base_schedule = learning_rate_schedule(
        optim.lr, optim.total_steps, optim.warmup_steps, optim.schedule,
        optim.get('warmup_start_lr', 0.0), optim.get('end_lr', 0.0))
    transforms = {FROZEN_LABEL: optax.set_to_zero()}
    for name in set(flax.traverse_util.flatten_dict(labels).values()) - {FROZEN_LABEL}:
        factor = float(name.removeprefix('lr_x'))
        transforms[name] = build(lambda step, f=factor: f * base_schedule(step), optim,
                                 decay_mask)
    frozen = jax.tree_util.tree_map(lambda t: not t, trainable)
    # Zero frozen gradients first so they do not count in the clipping norm.
    chain = [optax.masked(optax.set_to_zero(), frozen)]
    if optim.grad_clip:
        chain.append(optax.clip_by_global_norm(optim.grad_clip))
    chain.append(optax.multi_transform(transforms, labels))
    return optax.chain(*chain), base_schedule
