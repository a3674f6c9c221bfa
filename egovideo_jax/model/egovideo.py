"""EgoVideo: video tower (+ motion-adapter fast branch) and CLIP text tower."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.text import TextTransformer
from egovideo_jax.model.transformer import Dtype, logical
from egovideo_jax.model.vit import VisionTransformer


def is_adapter_path(path) -> bool:
    """True for parameters of a motion adapter (`.../adapter/...`)."""
    return any(getattr(entry, 'key', None) == 'adapter' for entry in path)


def _freeze_backbone(variables):
    """Stops gradients into every vision parameter except the adapters'."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if is_adapter_path(path) else jax.lax.stop_gradient(leaf),
        variables)


def _l2_normalize(x):
    return x / jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True).astype(x.dtype)


class EgoVideo(nn.Module):
    """Two towers. `mode='single'`: one video branch. `mode='slowfast'`: 4 frames through the
    backbone (which learns) and 16 frames through the same backbone with adapters; there the
    shared weights are frozen while gradients flow through them to the adapters."""
    config: EgoVideoConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat_policy: str | None = None
    attention: str = 'auto'  # transformer.ATTENTION_IMPLEMENTATIONS

    def setup(self):
        cfg = self.config
        towers = dict(dtype=self.dtype, param_dtype=self.param_dtype,
                      scan_layers=self.scan_layers, remat_policy=self.remat_policy,
                      attention=self.attention)
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.adapter_ratio, **towers)
        self.textual = TextTransformer(cfg.text, cfg.embed_dim, **towers)
        self.logit_scale = self.param(
            'logit_scale', logical(nn.initializers.constant(math.log(1 / 0.07)), ()), (),
            self.param_dtype)
        if cfg.mode == 'slowfast':
            self.slowfast_projection = self.param(
                'slowfast_projection',
                logical(nn.initializers.truncated_normal((2 * cfg.embed_dim) ** -0.5),
                        ('fusion', 'proj')),
                (2 * cfg.embed_dim, cfg.embed_dim), self.param_dtype)

    def _fast_branch(self, fast):
        if self.is_initializing():  # the adapters' parameters are created here
            return self.visual(fast, use_adapters=True)
        frozen_visual = nn.map_variables(
            lambda module, video: module(video, use_adapters=True), 'params',
            trans_in_fn=_freeze_backbone)
        return frozen_visual(self.visual, fast)

    def encode_video(self, video, fast=None, normalize: bool = True):
        """single: `encode_video(frames)`; slowfast: `encode_video(slow, fast)`.

        Frames are `[B, T, H, W, 3]`, CLIP-normalised. Returns `[B, embed_dim]`.
        """
        if self.config.mode == 'single':
            if fast is not None:
                raise ValueError('a single-branch model takes one video; build the model '
                                 "with mode='slowfast' for slow + fast inputs")
            embedding = self.visual(video)
        else:
            if fast is None:
                raise ValueError('a slowfast model needs both the slow (4-frame) and the '
                                 'fast (16-frame) video: encode_video(slow, fast)')
            slow_embedding = self.visual(video)
            fast_embedding = self._fast_branch(fast)
            embedding = (jnp.concatenate([slow_embedding, fast_embedding], axis=-1)
                         @ self.slowfast_projection.astype(self.dtype))
        return _l2_normalize(embedding) if normalize else embedding

    def encode_text(self, tokens, normalize: bool = True):
        embedding = self.textual(tokens)
        return _l2_normalize(embedding) if normalize else embedding

    def __call__(self, video, tokens, fast=None):
        """Training outputs: normalised video and text embeddings and exp(logit_scale)."""
        return {'video': self.encode_video(video, fast), 'text': self.encode_text(tokens),
                'logit_scale': jnp.exp(self.logit_scale)}


def dummy_inputs(config: EgoVideoConfig, batch: int = 1):
    """Zero inputs of the right shapes for `EgoVideo.init`: (video, tokens, fast or None).

    The fast input has T0 frames: no parameter depends on its length, and it is cheaper.
    """
    size = config.vision.image_size
    video = jnp.zeros((batch, config.vision.num_frames, size, size, 3), jnp.float32)
    tokens = jnp.zeros((batch, config.text.context_length), jnp.int32)
    fast = video if config.mode == 'slowfast' else None
    return video, tokens, fast
