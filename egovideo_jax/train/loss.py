"""Symmetric InfoNCE (CLIP) loss between video and text embeddings.

`naive_contrastive_loss` builds the full [B, B] logit matrix, which every device holds when
the batch is data-parallel. At pod scale that is the cost that matters: a 32k global batch
makes 4 GiB of float32 logits per device, and as much again for the log-softmax and its
gradient. `sharded_contrastive_loss` keeps each device to its own rows: it all-gathers the
other modality's embeddings (B x E, small next to B x B) and forms a [B/n, B] block per
direction, so n devices each hold 1/n of the matrix. Every row's cross-entropy depends only on
that row, so the summed losses and accuracies are the same numbers as the naive loss (up to
float summation order), and gradients flow back through the all-gather.
"""
from __future__ import annotations

import math
from typing import Sequence

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


def sharded_contrastive_loss(video: jax.Array, text: jax.Array, logit_scale: jax.Array,
                             mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES
                             ) -> tuple[jax.Array, dict]:
    """`naive_contrastive_loss` with each device holding only a [B/n, B] logit block per
    direction, n being the product of the `batch_axes` present in `mesh`. The batch is sharded
    over those axes (first axis major, as in `PartitionSpec(batch_axes)`); other mesh axes,
    such as 'tensor', see replicated embeddings. Differentiable and jit-able."""
    axes = mesh_batch_axes(mesh, batch_axes)
    shards = math.prod(mesh.shape[axis] for axis in axes)
    batch = video.shape[0]
    if batch % shards:
        raise ValueError(f'batch {batch} is not divisible by the {shards} shards of mesh '
                         f'axes {axes}')
    local_batch = batch // shards

    def local_sums(video_rows, text_rows, scale):
        # Row-major over `axes`, the order in which PartitionSpec and all_gather lay out the
        # shards, so `shard` is this block's position in the global batch.
        shard = 0
        for axis in axes:
            shard = shard * mesh.shape[axis] + jax.lax.axis_index(axis)
        first_label = shard * local_batch
        all_text = jax.lax.all_gather(text_rows, axes, tiled=True)
        all_video = jax.lax.all_gather(video_rows, axes, tiled=True)
        v2t = _retrieval_sums(video_rows, all_text, scale, first_label)
        t2v = _retrieval_sums(text_rows, all_video, scale, first_label)
        return jax.lax.psum((*v2t, *t2v), axes)

    rows = PartitionSpec(axes)
    sums = jax.shard_map(local_sums, mesh=mesh, in_specs=(rows, rows, PartitionSpec()),
                         out_specs=PartitionSpec())(
        video, text, jnp.asarray(logit_scale, jnp.float32))
    return _loss_and_metrics(*sums, batch)


def contrastive_loss(video: jax.Array, text: jax.Array, logit_scale: jax.Array,
                     mesh: Mesh | None = None, batch_axes: Sequence[str] = BATCH_AXES
                     ) -> tuple[jax.Array, dict]:
    """The sharded loss on a multi-device mesh, else the naive one (same numbers)."""
    if mesh is None or mesh.size == 1:
        return naive_contrastive_loss(video, text, logit_scale)
    return sharded_contrastive_loss(video, text, logit_scale, mesh, batch_axes)
