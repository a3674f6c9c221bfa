"""Analytic model FLOPs of one train step: "model FLOPs, not compiler FLOPs".

XLA's `compiled.cost_analysis()` counts the body of a while loop once, so a scanned layer
stack (`scan_layers=True`: the b16 and l14_336 configs) reports a fraction of the real work,
and it sees almost nothing inside Pallas/custom kernels. MFU is therefore computed from this
count instead, derived from the model config alone (nothing is traced or compiled).

What is counted: matmul FLOPs only, 2 per multiply-add, for the whole global batch:
  patch embedding (`conv1` on the flattened patches), the fast branch's temporal-table resize
  (16x4 @ 4xD, tiny), q/k/v/out projections, MLPs, the attention core (QK^T and AV: 4 L^2 D
  per layer per example; the causal text tower counts half, 2 L^2 D, the unmasked triangle),
  motion adapters (down_proj, the depthwise temporal conv: 2*3*hidden per token, the 1x1 conv,
  up_proj), image/text projections, the slow/fast fusion projection and the contrastive logits
  (2 B^2 E for the whole batch; with k-step gradient accumulation k blocks of (B/k)^2).
Not counted: element-wise work (norms, GELU, softmax, residuals, the optimizer), embedding
lookups (0 FLOPs), rematerialised recomputation (model FLOPs, not hardware FLOPs). Gradient
accumulation changes no other term: the global batch is the same.

The backward rule, applied to every matmul-like op `out = a (*) b` with forward cost F:

    backward(F, operands) = F x (number of operands that need a gradient)

since d/da and d/db each cost one forward. A weight operand needs a gradient iff it is
trainable *in that branch* (the optimizer's `trainable`/`frozen` rules, and never the
fast branch's stop-gradient backbone); an activation operand needs one iff it depends on
some parameter that does (the gradient must pass through this op to reach it). So a
trainable layer costs 3x its forward, a frozen layer that gradients flow through (the fast
branch's blocks above block 0, whose adapters sit after each MLP) costs 2x, and a frozen
layer with nothing trainable below it (the fast branch's patch embedding and block 0's
attention/MLP; in stage2 the slow and text towers up to their projections) costs 1x. The
attention core has two activation operands (q and k, then the softmax and v): 2x forward in
backward once its inputs carry gradients. Liveness is tracked op by op through the forward
graph (`_Graph`), so any rule set (partial freezing, frozen adapters, ...) is counted right.

Use:
    model_flops_per_step(model_config, batch_size, trainable) -> FlopCount
    model_flops_from_config(config)  # the ml_collections train config (configs/cotrain.py)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Union

from egovideo_jax.model.config import EgoVideoConfig, get_model_config
from egovideo_jax.train.optimizer import param_paths, trainable_mask

# `trainable`: a predicate on '/'-joined parameter paths (optimizer.py's naming), or an
# object with `trainable` and `frozen` rule lists (config.optim), or None (everything trains).
Trainable = Union[Callable[[str], bool], Any, None]


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one train step for the whole global batch.

    `total` = forward + backward; `breakdown` maps components (`slow/mlp`, `fast/adapter`,
    `text/attention_core`, `logits`, ...; the single-branch model's video tower is `video/`)
    to their forward + backward FLOPs, `forward_breakdown` to their forward FLOPs.
    """
    total: float
    forward: float
    breakdown: dict[str, float]
    forward_breakdown: dict[str, float]

    @property
    def backward(self) -> float:
        return self.total - self.forward


def backward_flops(forward: float, needs_grad: Iterable[bool]) -> float:
    """Backward FLOPs of a two-operand matmul-like op: one forward per operand whose
    gradient is needed (activation gradient, weight gradient, or both)."""
    return forward * sum(bool(n) for n in needs_grad)


def trainable_predicate(trainable: Trainable) -> Callable[[str], bool]:
    """A path -> bool predicate from a predicate, config.optim (its `trainable`/`frozen`
    rules, as `optimizer.trainable_mask` applies them) or None (everything trains)."""
    if trainable is None:
        return lambda path: True
    if callable(trainable):
        return trainable
    rules, frozen = tuple(trainable.trainable), tuple(trainable.frozen)

    def predicate(path: str) -> bool:
        tree = _tree_of(path)
        return bool(param_paths(trainable_mask(tree, rules, frozen))[path])
    return predicate


def _tree_of(path: str) -> dict:
    tree: dict = {}
    node = tree
    *parents, leaf = path.split('/')
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = 0
    return tree


def _any(*live: bool) -> bool:
    """Liveness of a value computed from these (every argument is evaluated: no shortcut)."""
    return any(live)


class _Graph:
    """Accumulates forward and backward FLOPs of matmul-like ops by component.

    Values are liveness flags: True when the tensor depends on a parameter that receives a
    gradient (so the gradient must flow back through whatever consumes it).
    """

    def __init__(self, trainable: Callable[[str], bool]):
        self.trainable = trainable
        self.forward: dict[str, float] = {}
        self.total: dict[str, float] = {}
        self.queried: set[str] = set()

    def param(self, path: str, frozen: bool = False) -> bool:
        """Whether parameter `path` gets a gradient (False under stop_gradient: `frozen`)."""
        self.queried.add(path)
        return not frozen and bool(self.trainable(path))

    def op(self, component: str, flops: float, *operands: bool) -> bool:
        """Records one op `a (*) b` of `flops` forward FLOPs; returns its output's liveness."""
        self.forward[component] = self.forward.get(component, 0.0) + flops
        self.total[component] = (self.total.get(component, 0.0) + flops
                                 + backward_flops(flops, operands))
        return any(operands)


def _block(graph: _Graph, component: str, prefix: str, x: bool, *, batch: int, length: int,
           width: int, mlp_dim: int, causal: bool = False, frozen: bool = False,
           adapter_hidden: int | None = None) -> bool:
    """One ResidualBlock (transformer.py) on `batch` sequences of `length` tokens, with the
    MotionAdapter when `adapter_hidden` is set. Returns the liveness of the block's output."""
    p = lambda name: graph.param(f'{prefix}/{name}', frozen)
    tokens = batch * length
    h = _any(x, p('ln_1/scale'), p('ln_1/bias'))
    projection = 2 * tokens * width * width
    q, k, v = (_any(graph.op(f'{component}/attention_proj', projection, h,
                             p(f'attn/{name}/kernel')), p(f'attn/{name}/bias'))
               for name in ('query', 'key', 'value'))
    core = 2 * batch * length * length * width / (2 if causal else 1)  # per matmul
    weights = graph.op(f'{component}/attention_core', core, q, k)  # softmax(QK^T)
    y = graph.op(f'{component}/attention_core', core, weights, v)  # (.) V
    out = graph.op(f'{component}/attention_proj', projection, y, p('attn/out/kernel'))
    x = _any(x, out, p('attn/out/bias'))
    h = _any(x, p('ln_2/scale'), p('ln_2/bias'))
    h = _any(graph.op(f'{component}/mlp', 2 * tokens * width * mlp_dim, h,
                      p('mlp/fc1/kernel')), p('mlp/fc1/bias'))
    out = graph.op(f'{component}/mlp', 2 * tokens * mlp_dim * width, h, p('mlp/fc2/kernel'))
    x = _any(x, out, p('mlp/fc2/bias'))
    if adapter_hidden is not None:
        tokens = batch * (length - 1)  # the class token passes the adapter by
        hidden = adapter_hidden
        a = lambda name: graph.param(f'{prefix}/adapter/{name}')  # never under stop_gradient
        c = f'{component}/adapter'
        z = _any(graph.op(c, 2 * tokens * width * hidden, x, a('down_proj/kernel')),
                 a('down_proj/bias'))
        series = _any(graph.op(c, 2 * 3 * tokens * hidden, z, a('dwconv/kernel')),
                      a('dwconv/bias'))  # depthwise, kernel 3 along time
        motion = _any(graph.op(c, 2 * tokens * hidden * hidden, series, a('conv/kernel')),
                      a('conv/bias'))
        update = _any(graph.op(c, 2 * tokens * hidden * width, _any(z, motion),
                               a('up_proj/kernel')), a('up_proj/bias'))
        x = _any(x, update, a('gamma'))
    return x


def _vision(graph: _Graph, component: str, config: EgoVideoConfig, batch: int, frames: int,
            fast: bool, scan_layers: bool) -> bool:
    """The VisionTransformer (vit.py) on `frames`-frame clips; `fast`: the adapter branch,
    whose backbone is under stop_gradient. Returns the liveness of the pooled projection."""
    cfg = config.vision
    p = lambda name: graph.param(f'visual/{name}', fast)
    patches = cfg.grid ** 2
    length = 1 + frames * patches
    x = graph.op(f'{component}/patch_embed',
                 2 * batch * frames * patches * 3 * cfg.patch_size ** 2 * cfg.width,
                 False, p('conv1/kernel'))
    temporal = p('temporal_embedding')
    if frames != cfg.num_frames:  # resize matrix [frames, T0] @ table [T0, width]
        temporal = graph.op(f'{component}/patch_embed', 2 * frames * cfg.num_frames * cfg.width,
                            False, temporal)
    x = _any(x, temporal, p('positional_embedding'), p('class_embedding'), p('ln_pre/scale'),
             p('ln_pre/bias'))
    hidden = int(cfg.width * config.adapter_ratio) if fast else None
    for i in range(cfg.layers):
        x = _block(graph, component, f'visual/blocks{"" if scan_layers else f"_{i}"}', x,
                   batch=batch, length=length, width=cfg.width, mlp_dim=cfg.mlp_dim,
                   frozen=fast, adapter_hidden=hidden)
    x = _any(x, p('ln_post/scale'), p('ln_post/bias'))
    return graph.op(f'{component}/projection', 2 * batch * cfg.width * config.embed_dim, x,
                    p('image_projection'))


def _text(graph: _Graph, config: EgoVideoConfig, batch: int, length: int,
          scan_layers: bool) -> bool:
    """The TextTransformer (text.py): the token lookup is free, the blocks are causal."""
    cfg = config.text
    p = lambda name: graph.param(f'textual/{name}')
    x = _any(p('token_embedding/embedding'), p('positional_embedding'))
    for i in range(cfg.layers):
        x = _block(graph, 'text', f'textual/blocks{"" if scan_layers else f"_{i}"}', x,
                   batch=batch, length=length, width=cfg.width, mlp_dim=4 * cfg.width,
                   causal=True)
    x = _any(x, p('ln_final/scale'), p('ln_final/bias'))
    return graph.op('text/projection', 2 * batch * cfg.width * config.embed_dim, x,
                    p('text_projection'))


def _count(model_config: EgoVideoConfig, batch_size: int, trainable: Trainable,
           scan_layers: bool, text_length: int | None, grad_accum_steps: int,
           with_text: bool = True) -> _Graph:
    if batch_size < 1 or grad_accum_steps < 1 or batch_size % grad_accum_steps:
        raise ValueError(f'batch_size {batch_size} must be a positive multiple of '
                         f'grad_accum_steps {grad_accum_steps}')
    cfg = model_config
    graph = _Graph(trainable_predicate(trainable))
    batch = batch_size
    if cfg.mode == 'single':
        video = _vision(graph, 'video', cfg, batch, cfg.vision.num_frames, False, scan_layers)
    else:
        slow = _vision(graph, 'slow', cfg, batch, cfg.vision.num_frames, False, scan_layers)
        fast = _vision(graph, 'fast', cfg, batch, cfg.fast_frames, True, scan_layers)
        video = graph.op('fusion', 2 * batch * 2 * cfg.embed_dim * cfg.embed_dim,
                         _any(slow, fast), graph.param('slowfast_projection'))
    if not with_text:  # a video classifier: its heads are negligible next to the tower
        return graph
    text = _text(graph, cfg, batch, text_length or cfg.text.context_length, scan_layers)
    micro = batch // grad_accum_steps  # each micro-batch's loss sees only its own negatives
    graph.op('logits', grad_accum_steps * 2 * micro * micro * cfg.embed_dim, video, text)
    return graph


def model_flops_per_step(model_config: EgoVideoConfig, batch_size: int,
                         trainable: Trainable = None, *, scan_layers: bool = False,
                         text_length: int | None = None, grad_accum_steps: int = 1,
                         with_text: bool = True) -> FlopCount:
    """Model FLOPs (forward + backward, matmuls only) of one train step on `batch_size` clips
    (the global batch).

    trainable: which parameters train: a predicate on '/'-joined parameter paths
      (`visual/blocks_3/attn/query/kernel`; `visual/blocks/...` when `scan_layers`), an
      object with `trainable` and `frozen` regex lists (config.optim, matched as
      optimizer.py does), or None (all). The fast branch's backbone never trains.
    text_length: tokens per caption (default: the context length, as the batches are).
    grad_accum_steps: only the contrastive logits depend on it (k blocks of (B/k)^2).
    with_text: False for the video classifier of fine-tuning (no text tower, no logits).
    """
    graph = _count(model_config, batch_size, trainable, scan_layers, text_length,
                   grad_accum_steps, with_text)
    return FlopCount(total=sum(graph.total.values()), forward=sum(graph.forward.values()),
                     breakdown=dict(graph.total), forward_breakdown=dict(graph.forward))


def queried_param_paths(model_config: EgoVideoConfig, scan_layers: bool = False) -> set[str]:
    """Every parameter path the count asks `trainable` about (for checking against the model's
    real parameter tree)."""
    return _count(model_config, 2, None, scan_layers, None, 1).queried


def model_flops_from_config(config) -> FlopCount:
    """`model_flops_per_step` of an EgoVideo train config (configs/cotrain.py; the MIR
    fine-tuning configs): its model, global batch `data.batch_size`,
    `optim.trainable`/`optim.frozen` rules, layer layout and gradient accumulation. Any task:
    `train.tasks.task_of(config).model_flops()`."""
    model = config.model
    model_config = get_model_config(model.variant, model.mode, model.num_frames,
                                    fast_frames=model.fast_frames)
    return model_flops_per_step(model_config, config.data.batch_size, config.optim,
                                scan_layers=bool(model.scan_layers),
                                grad_accum_steps=config.optim.get('grad_accum_steps', 1))
