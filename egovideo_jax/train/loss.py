"""The training losses: symmetric InfoNCE (CLIP) and the max-margin ranking loss between video
and text embeddings (co-training, EK-100 MIR fine-tuning), and the classification losses of
fine-tuning (summed cross-entropy over heads, AVION's verb / noun marginalisation).

`naive_contrastive_loss` builds the full [B, B] logit matrix, which every device holds when
the batch is data-parallel. At pod scale that is the cost that matters: a 32k global batch
makes 4 GiB of float32 logits per device, and as much again for the log-softmax and its
gradient. `sharded_contrastive_loss` keeps each device to its own rows: it all-gathers the
other modality's embeddings (B x E, small next to B x B) and forms a [B/n, B] block per
direction, so n devices each hold 1/n of the matrix. Every row's cross-entropy depends only on
that row, so the summed losses and accuracies are the same numbers as the naive loss (up to
float summation order), and gradients flow back through the all-gather. The max-margin loss
(`max_margin_loss`) is sharded the same way (`_sharded_sums`): each of its hinge terms, too,
depends on one row and the positive of that row.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from egovideo_jax.parallel.batching import batch_axes as mesh_batch_axes
from egovideo_jax.parallel.sharding import BATCH_AXES


def retrieval_logits(queries: jax.Array, keys: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """Scaled similarity of every query row to every key row: [queries, keys], float32."""
    # HIGHEST: TPU and GPU otherwise run float32 matmuls in bf16/TF32, and logits at
    # scale ~100 would lose the precision that keeps both losses equal.
    similarity = jnp.einsum('qe,ke->qk', queries.astype(jnp.float32),
                            keys.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return jnp.asarray(logit_scale, jnp.float32) * similarity


def _retrieval_sums(queries: jax.Array, keys: jax.Array, logit_scale: jax.Array,
                    first_label) -> tuple[jax.Array, jax.Array]:
    """Summed cross-entropy and count of correct top-1 retrievals for `queries`, whose i-th
    row matches row `first_label + i` of `keys`."""
    logits = retrieval_logits(queries, keys, logit_scale)
    labels = first_label + jnp.arange(queries.shape[0])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1).sum()
    correct = (jnp.argmax(logits, axis=-1) == labels).sum()
    return nll, correct


def _loss_and_metrics(v2t_nll, v2t_correct, t2v_nll, t2v_correct,
                      batch: int) -> tuple[jax.Array, dict]:
    loss = (v2t_nll + t2v_nll) / (2 * batch)
    return loss, {'loss': loss,
                  'v2t_accuracy': v2t_correct.astype(jnp.float32) / batch,
                  't2v_accuracy': t2v_correct.astype(jnp.float32) / batch}


def naive_contrastive_loss(video: jax.Array, text: jax.Array,
                           logit_scale: jax.Array) -> tuple[jax.Array, dict]:
    """CLIP loss over the whole batch: video and text are L2-normalised [B, E], `logit_scale`
    the multiplier (exp of the learnt log-scale). Returns the loss and metrics `loss`,
    `v2t_accuracy`, `t2v_accuracy` (in-batch top-1 retrieval). Materialises [B, B] logits."""
    batch = video.shape[0]
    v2t = _retrieval_sums(video, text, logit_scale, 0)
    t2v = _retrieval_sums(text, video, logit_scale, 0)
    return _loss_and_metrics(*v2t, *t2v, batch)


def _sharded_sums(direction_sums: Callable[..., tuple], video: jax.Array, text: jax.Array,
                 mesh: Mesh, batch_axes: Sequence[str], row_args: tuple = (),
                 shared_args: tuple = ()) -> tuple:
    """Global sums of both retrieval directions with each device holding only its rows.

    `direction_sums(queries, keys, first_label, *rows, *shared)` returns a tuple of sums over
    `queries` (this device's [B/n, E] rows, whose i-th row matches row `first_label + i` of
    the all-gathered [B, E] `keys`); it runs video -> text and text -> video, and the
    results (v2t sums, then t2v sums) are summed over the batch shards. `row_args` are
    [B, ...] arrays sharded like the batch (e.g. per-row margins), `shared_args` replicated
    ones. n is the product of the `batch_axes` present in `mesh`; the batch is sharded over
    them (first axis major, as in `PartitionSpec(batch_axes)`); other mesh axes, such as
    'tensor', see replicated inputs."""
    axes = mesh_batch_axes(mesh, batch_axes)
    shards = math.prod(mesh.shape[axis] for axis in axes)
    batch = video.shape[0]
    if batch % shards:
        raise ValueError(f'batch {batch} is not divisible by the {shards} shards of mesh '
                         f'axes {axes}')
    local_batch = batch // shards

    def local_sums(video_rows, text_rows, rows, shared):
        # Row-major over `axes`, the order in which PartitionSpec and all_gather lay out the
        # shards, so `shard` is this block's position in the global batch.
        shard = 0
        for axis in axes:
            shard = shard * mesh.shape[axis] + jax.lax.axis_index(axis)
        first_label = shard * local_batch
        all_text = jax.lax.all_gather(text_rows, axes, tiled=True)
        all_video = jax.lax.all_gather(video_rows, axes, tiled=True)
        v2t = direction_sums(video_rows, all_text, first_label, *rows, *shared)
        t2v = direction_sums(text_rows, all_video, first_label, *rows, *shared)
        return jax.lax.psum((*v2t, *t2v), axes)

    rows = PartitionSpec(axes)
    in_specs = (rows, rows, tuple(rows for _ in row_args),
                tuple(PartitionSpec() for _ in shared_args))
    return jax.shard_map(local_sums, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec())(
        video, text, tuple(row_args), tuple(shared_args))


def sharded_contrastive_loss(video: jax.Array, text: jax.Array, logit_scale: jax.Array,
                             mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES
                             ) -> tuple[jax.Array, dict]:
    """`naive_contrastive_loss` with each device holding only a [B/n, B] logit block per
    direction, n being the product of the `batch_axes` present in `mesh`. The batch is sharded
    over those axes (first axis major, as in `PartitionSpec(batch_axes)`); other mesh axes,
    such as 'tensor', see replicated embeddings. Differentiable and jit-able."""
    def direction_sums(queries, keys, first_label, scale):
        return _retrieval_sums(queries, keys, scale, first_label)

    sums = _sharded_sums(direction_sums, video, text, mesh, batch_axes,
                         shared_args=(jnp.asarray(logit_scale, jnp.float32),))
    return _loss_and_metrics(*sums, video.shape[0])


def contrastive_loss(video: jax.Array, text: jax.Array, logit_scale: jax.Array,
                     mesh: Mesh | None = None, batch_axes: Sequence[str] = BATCH_AXES
                     ) -> tuple[jax.Array, dict]:
    """The sharded loss on a multi-device mesh, else the naive one (same numbers)."""
    if mesh is None or mesh.size == 1:
        return naive_contrastive_loss(video, text, logit_scale)
    return sharded_contrastive_loss(video, text, logit_scale, mesh, batch_axes)


# ----------------------------------------------------------------------------- max-margin

def _ranking_sums(queries: jax.Array, keys: jax.Array, first_label,
                  margins: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed hinge terms relu(margin_i - (s_ii - s_ij)) over every key j but the positive,
    and the count of correct top-1 retrievals, for `queries` whose i-th row matches row
    `first_label + i` of `keys`; `margins` [queries] is each row's margin."""
    similarity = retrieval_logits(queries, keys, jnp.float32(1))
    labels = first_label + jnp.arange(queries.shape[0])
    positive = jnp.take_along_axis(similarity, labels[:, None], axis=-1)
    hinge = jax.nn.relu(margins.astype(jnp.float32)[:, None] - (positive - similarity))
    negative = jnp.arange(keys.shape[0])[None, :] != labels[:, None]
    correct = (jnp.argmax(similarity, axis=-1) == labels).sum()
    return jnp.where(negative, hinge, 0.0).sum(), correct


def _row_margins(batch: int, margin: float, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.full((batch,), margin, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (batch,):
        raise ValueError(f'max-margin weights must be [batch] = [{batch}], got '
                         f'{weights.shape}')
    return weights * margin


def _ranking_loss_and_metrics(v2t_hinge, v2t_correct, t2v_hinge, t2v_correct,
                              batch: int) -> tuple[jax.Array, dict]:
    # fix_norm: the mean over the 2 B (B - 1) off-diagonal terms (no negatives when B = 1).
    loss = (v2t_hinge + t2v_hinge) / max(2 * batch * (batch - 1), 1)
    return loss, {'loss': loss,
                  'v2t_accuracy': v2t_correct.astype(jnp.float32) / batch,
                  't2v_accuracy': t2v_correct.astype(jnp.float32) / batch}


def naive_max_margin_loss(video: jax.Array, text: jax.Array, margin: float = 0.2,
                          weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """The max-margin ranking loss over the whole batch (materialises [B, B] similarities).

    video and text are L2-normalised [B, E], s = video @ text.T. The loss is the mean over
    both directions and every off-diagonal pair of relu(m_i - (s_ii - s_ij)) (video -> text)
    and relu(m_i - (s_ii - s_ji)) (text -> video), i.e. the sum over 2 B (B - 1) terms:
    LaViLa / AVION's `MaxMarginRankingLoss(fix_norm=True)` with m_i = `margin`. With
    `weights` ([B], the relevancy of row i's caption to its video) m_i = weights_i * margin:
    EgoVLP's `AdaptiveMaxMarginRankingLoss` (which it uses with margin 0.4). Metrics `loss`,
    `v2t_accuracy`, `t2v_accuracy` (in-batch top-1), as the contrastive loss."""
    batch = video.shape[0]
    margins = _row_margins(batch, margin, weights)
    v2t = _ranking_sums(video, text, 0, margins)
    t2v = _ranking_sums(text, video, 0, margins)
    return _ranking_loss_and_metrics(*v2t, *t2v, batch)


def sharded_max_margin_loss(video: jax.Array, text: jax.Array, mesh: Mesh,
                            margin: float = 0.2, weights: jax.Array | None = None,
                            batch_axes: Sequence[str] = BATCH_AXES) -> tuple[jax.Array, dict]:
    """`naive_max_margin_loss` with each device holding only a [B/n, B] similarity block per
    direction (as `sharded_contrastive_loss`). Differentiable and jit-able."""
    batch = video.shape[0]
    sums = _sharded_sums(_ranking_sums, video, text, mesh, batch_axes,
                         row_args=(_row_margins(batch, margin, weights),))
    return _ranking_loss_and_metrics(*sums, batch)


def max_margin_loss(video: jax.Array, text: jax.Array, mesh: Mesh | None = None,
                    margin: float = 0.2, weights: jax.Array | None = None,
                    batch_axes: Sequence[str] = BATCH_AXES) -> tuple[jax.Array, dict]:
    """The sharded max-margin loss on a multi-device mesh, else the naive one (same
    numbers); see `naive_max_margin_loss`."""
    if mesh is None or mesh.size == 1:
        return naive_max_margin_loss(video, text, margin, weights)
    return sharded_max_margin_loss(video, text, mesh, margin, weights, batch_axes)


# ----------------------------------------------------------------------------- classification

def soft_targets(target: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    """[B, C] float32 targets from int labels [B] (-1: no label, an all-zero row) or soft
    targets [B, C], smoothed as (1 - eps) t + eps / C times the row's mass (so an unlabelled
    row stays zero)."""
    target = jnp.asarray(target)
    if target.ndim == 1:
        soft = jax.nn.one_hot(target, num_classes, dtype=jnp.float32)  # -1 -> zeros
    elif target.shape[-1] == num_classes:
        soft = target.astype(jnp.float32)
    else:
        raise ValueError(f'soft targets of shape {target.shape} do not match '
                         f'{num_classes} classes')
    if label_smoothing:
        mass = soft.sum(axis=-1, keepdims=True)
        soft = (1 - label_smoothing) * soft + label_smoothing / num_classes * mass
    return soft


def classification_loss(logits: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
                        label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
    """Summed cross-entropy over the heads (LaViLa's verb + noun + action).

    `logits[head]` [B, C]; `targets[head]` int class indices [B] (-1: no label for this head,
    the row is left out of its mean) or soft target distributions [B, C] (mixup / cutmix; a
    row's weight in the mean is its mass, so all-zero rows are left out). Targets are
    smoothed as (1 - eps) target + eps / C. The loss is the sum over heads of each head's
    mean cross-entropy over its labelled rows. Metrics: `loss`, `{head}_loss`, `{head}_top1`
    (top-1 accuracy over the labelled rows, against the argmax of soft targets)."""
    if set(logits) != set(targets):
        raise ValueError(f'heads of the logits {sorted(logits)} and of the targets '
                         f'{sorted(targets)} differ')
    metrics, total = {}, jnp.float32(0)
    for head in sorted(logits):
        head_logits = jnp.asarray(logits[head], jnp.float32)
        soft = soft_targets(targets[head], head_logits.shape[-1], label_smoothing)
        mass = soft.sum(axis=-1)
        log_probs = jax.nn.log_softmax(head_logits, axis=-1)
        head_loss = -(soft * log_probs).sum() / jnp.maximum(mass.sum(), 1e-12)
        labelled = mass > 0
        correct = (jnp.argmax(head_logits, -1) == jnp.argmax(soft, -1)) & labelled
        metrics[f'{head}_loss'] = head_loss
        metrics[f'{head}_top1'] = correct.sum() / jnp.maximum(labelled.sum(), 1)
        total = total + head_loss
    metrics['loss'] = total
    return total, metrics


def marginal_log_probs(action_logits: jax.Array, action_to_part: jax.Array,
                       num_parts: int) -> jax.Array:
    """[B, num_parts] log-probabilities of the verbs (or nouns) under the softmax over the
    actions: log sum_{a: part(a) = p} softmax(action_logits)_a (AVION's marginalisation for an
    action-only head). `action_to_part` [A] maps each action to its verb (noun) index. Stable:
    a log-sum-exp per part through segment ops; a part no action maps to gets -inf."""
    log_probs = jax.nn.log_softmax(jnp.asarray(action_logits, jnp.float32), axis=-1)
    segments = jnp.asarray(action_to_part, jnp.int32)
    per_action = log_probs.T  # [A, B]: segment ops reduce the leading axis
    peak = jax.ops.segment_max(per_action, segments, num_segments=num_parts)
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    total = jax.ops.segment_sum(jnp.exp(per_action - peak[segments]), segments,
                                num_segments=num_parts)
    return (jnp.log(total) + peak).T
