"""Video ViT with joint space-time attention (the EgoVideo vision tower)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from egovideo_jax.model.config import VisionConfig
from egovideo_jax.model.transformer import Dtype, ResidualBlock, apply_blocks, layer_norm, logical


def temporal_resize_matrix(source_len: int, target_len: int) -> np.ndarray:
    """[target, source] weights of 1-D linear resizing with half-pixel centres, edges clamped.

    The same sampling as bilinear `align_corners=False` resizing in PyTorch.
    """
    weights = np.zeros((target_len, source_len), np.float32)
    scale = source_len / target_len
    for t in range(target_len):
        src = max((t + 0.5) * scale - 0.5, 0.0)
        lo = min(int(np.floor(src)), source_len - 1)
        hi = min(lo + 1, source_len - 1)
        frac = src - lo
        weights[t, lo] += 1.0 - frac
        weights[t, hi] += frac
    return weights


def patchify(video, patch_size: int):
    """[B, T, H, W, C] -> [B, T*h*w, C*p*p]: tokens in (t, h, w) order, pixels in (c, row, col)."""
    batch, frames, height, width, channels = video.shape
    p = patch_size
    grid_h, grid_w = height // p, width // p
    x = video.reshape(batch, frames, grid_h, p, grid_w, p, channels)
    x = x.transpose(0, 1, 2, 4, 6, 3, 5)
    return x.reshape(batch, frames * grid_h * grid_w, channels * p * p)


class VisionTransformer(nn.Module):
    config: VisionConfig
    embed_dim: int
    adapter_ratio: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat_policy: str | None = None
    attention: str = 'auto'  # transformer.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, video, use_adapters: bool = False):
        """video [B, T, H, W, 3] (CLIP-normalised) -> pooled projection [B, embed_dim]."""
        cfg = self.config
        batch, frames, height, width, channels = video.shape
        if (height, width, channels) != (cfg.image_size, cfg.image_size, 3):
            raise ValueError(f'expected frames of {cfg.image_size}x{cfg.image_size}x3, '
                             f'got {height}x{width}x{channels}')
        patches_per_frame = cfg.grid ** 2
        scale = cfg.width ** -0.5

        x = nn.Dense(cfg.width, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=logical(nn.initializers.normal(scale), ('patch', 'embed')),
                     name='conv1')(patchify(jnp.asarray(video, self.dtype), cfg.patch_size))
        class_embedding = self.param(
            'class_embedding', logical(nn.initializers.normal(scale), ('embed',)),
            (cfg.width,), self.param_dtype)
        positional = self.param(
            'positional_embedding', logical(nn.initializers.normal(scale), (None, 'embed')),
            (1 + patches_per_frame, cfg.width), self.param_dtype)
        temporal = self.param(
            'temporal_embedding', logical(nn.initializers.zeros, (None, 'embed')),
            (cfg.num_frames, cfg.width), self.param_dtype)
        if frames != cfg.num_frames:
            temporal = jnp.asarray(temporal_resize_matrix(cfg.num_frames, frames)) @ temporal

        x = x.reshape(batch, frames, patches_per_frame, cfg.width)
        x = x + (positional[None, None, 1:] + temporal[None, :, None]).astype(self.dtype)
        x = x.reshape(batch, frames * patches_per_frame, cfg.width)
        cls_token = jnp.broadcast_to((class_embedding + positional[0]).astype(self.dtype),
                                     (batch, 1, cfg.width))
        x = jnp.concatenate([cls_token, x], axis=1)
        x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

        x = layer_norm(cfg.ln_eps, self.dtype, self.param_dtype, 'ln_pre')(x)
        x = apply_blocks(ResidualBlock, x, num_layers=cfg.layers, scan=self.scan_layers,
                         remat_policy=self.remat_policy, num_heads=cfg.heads,
                         mlp_dim=cfg.mlp_dim, ln_eps=cfg.ln_eps,
                         adapter_frames=frames if use_adapters else None,
                         adapter_ratio=self.adapter_ratio, dtype=self.dtype,
                         param_dtype=self.param_dtype,
                         attention=self.attention)
        pooled = layer_norm(cfg.ln_eps, self.dtype, self.param_dtype, 'ln_post')(x[:, 0])
        projection = self.param(
            'image_projection', logical(nn.initializers.normal(scale), ('embed', 'proj')),
            (cfg.width, self.embed_dim), self.param_dtype)
        return pooled @ projection.astype(self.dtype)
