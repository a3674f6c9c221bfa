"""Mixup and CutMix on video batches (fine-tuning's options), inside the jitted step.

timm's `Mixup` in batch mode, applied to clips: one mixing coefficient lam ~ Beta(alpha,
alpha) per batch, each clip mixed with the clip at the mirrored batch position (the batch
flipped). Mixup blends whole clips, lam x + (1 - lam) x_flipped; CutMix pastes one box of
area 1 - lam from the flipped clip into every frame (the same box, in relative coordinates,
for the slow and the fast video of a slow/fast model), and lam becomes the share of pixels
kept. With both enabled a batch uses CutMix with probability `switch_prob`. The targets mix
with the same lam: lam t + (1 - lam) t_flipped, after label smoothing (a linear map, so the
order does not matter).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from egovideo_jax.train.loss import soft_targets


def _box_mask(height: int, width: int, centre: jax.Array, side: jax.Array) -> jax.Array:
    """bool [H, W]: the pixels inside a box of relative side `side` centred at relative
    `centre` (y, x), clipped to the frame; pixel edges are rounded as timm's rand_bbox."""
    def span(size, middle):
        low = jnp.clip(jnp.round((middle - side / 2) * size), 0, size)
        high = jnp.clip(jnp.round((middle + side / 2) * size), 0, size)
        index = jnp.arange(size)
        return (index >= low) & (index < high)
    return span(height, centre[0])[:, None] & span(width, centre[1])[None, :]


def mix_batch(rng: jax.Array, videos: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
              num_classes: Mapping[str, int], mixup_alpha: float, cutmix_alpha: float,
              switch_prob: float = 0.5, label_smoothing: float = 0.0
              ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """(mixed videos, soft targets). `videos[name]` [B, T, H, W, C] (the first one, e.g.
    'slow', decides CutMix's pixel share); `targets[head]` int labels [B] (-1: none) or soft
    [B, classes]; `num_classes[head]` the head's class count. jit-able."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError('mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0')
    switch_rng, lam_rng, box_rng = jax.random.split(rng, 3)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(switch_rng) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha).astype(jnp.float32)
    lam = jax.random.beta(lam_rng, alpha, alpha)
    centre = jax.random.uniform(box_rng, (2,))
    side = jnp.sqrt(1 - lam)

    mixed, kept_share = {}, None
    for name, video in videos.items():
        partner = jnp.flip(video, axis=0)
        mask = _box_mask(video.shape[-3], video.shape[-2], centre, side)
        if kept_share is None:
            kept_share = 1 - mask.mean()
        cut = jnp.where(mask[:, :, None], partner, video)
        blend = (lam * video + (1 - lam) * partner).astype(video.dtype)
        mixed[name] = jnp.where(use_cutmix, cut, blend)
    lam = jnp.where(use_cutmix, kept_share, lam)

    soft = {}
    for head, target in targets.items():
        own = soft_targets(target, num_classes[head], label_smoothing)
        soft[head] = lam * own + (1 - lam) * jnp.flip(own, axis=0)
    return mixed, soft
