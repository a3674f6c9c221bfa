"""Motion adapter: a temporal bottleneck after each vision block on the fast (16-frame) branch."""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
logical = nn.with_logical_partitioning


class TemporalDepthwiseConv(nn.Module):
    """`nn.Conv(features, (3,), padding=1, feature_group_count=features)` over `[N, T, C]`,
    with the same parameters (kernel `[3, 1, C]`, bias `[C]`), computed as three shifted
    multiply-adds: XLA's CPU backend lowers the kernel gradient of a grouped convolution to a
    dense `[3, C, C]` one (C times the work; most of a B/16 train step on CPU)."""
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param('kernel', logical(nn.initializers.normal(math.sqrt(2 / 3)),
                                              (None, None, 'adapter')),
                            (3, 1, channels), self.param_dtype)
        bias = self.param('bias', logical(nn.initializers.zeros, ('adapter',)), (channels,),
                          self.param_dtype)
        x = jnp.asarray(x, self.dtype)
        taps = jnp.asarray(kernel[:, 0], self.dtype)
        padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
        # cross-correlation, as nn.Conv: out[t] = x[t-1] w0 + x[t] w1 + x[t+1] w2 + b
        return (padded[:, :-2] * taps[0] + x * taps[1] + padded[:, 2:] * taps[2]
                + jnp.asarray(bias, self.dtype))


class PointwiseConv(nn.Module):
    """`nn.Conv(features, (1,))` over `[N, T, C]` with its parameters (kernel `[1, C, F]`,
    bias `[F]`) as one matrix product: on CPU, XLA computes the kernel gradient of a
    width-1 convolution as a generic convolution over T, far slower than the product."""
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kernel = self.param('kernel', logical(nn.initializers.normal(
            math.sqrt(2 / channels)), (None, 'adapter_in', 'adapter')),
            (1, channels, self.features), self.param_dtype)
        bias = self.param('bias', logical(nn.initializers.zeros, ('adapter',)),
                          (self.features,), self.param_dtype)
        x = jnp.asarray(x, self.dtype)
        return x @ jnp.asarray(kernel[0], self.dtype) + jnp.asarray(bias, self.dtype)


class MotionAdapter(nn.Module):
    """x_tok += gamma * up(z + pointwise(depthwise_t(z))), z = GELU(down(x_tok)).

    Patch tokens only (the class token passes through). The depthwise conv runs along time
    at each spatial location. `up_proj` starts at zero, so a fresh adapter is the identity.
    """
    num_frames: int
    bottleneck_ratio: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cls_token, tokens = x[:, :1], x[:, 1:]
        batch, num_tokens, width = tokens.shape
        if num_tokens % self.num_frames:
            raise ValueError(f'{num_tokens} patch tokens do not split into '
                             f'{self.num_frames} frames')
        patches = num_tokens // self.num_frames
        hidden = int(width * self.bottleneck_ratio)
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = nn.Dense(hidden, **dense, name='down_proj',
                     kernel_init=logical(nn.initializers.truncated_normal(0.02),
                                         ('embed', 'adapter')),
                     bias_init=logical(nn.initializers.zeros, ('adapter',)))(tokens)
        z = nn.gelu(z, approximate=False)
        # [B, T*P, H] -> [B*P, T, H]: one temporal sequence per spatial location.
        series = z.reshape(batch, self.num_frames, patches, hidden)
        series = series.transpose(0, 2, 1, 3).reshape(batch * patches, self.num_frames, hidden)
        series = TemporalDepthwiseConv(**dense, name='dwconv')(series)
        series = PointwiseConv(hidden, **dense, name='conv')(series)
        motion = series.reshape(batch, patches, self.num_frames, hidden)
        motion = motion.transpose(0, 2, 1, 3).reshape(batch, num_tokens, hidden)
        update = nn.Dense(width, **dense, name='up_proj',
                          kernel_init=logical(nn.initializers.zeros, ('adapter', 'embed')),
                          bias_init=logical(nn.initializers.zeros, ('embed',)))(z + motion)
        gamma = self.param('gamma', logical(nn.initializers.ones, (None,)), (1,),
                           self.param_dtype)
        tokens = tokens + jnp.asarray(gamma, self.dtype) * update
        return jnp.concatenate([cls_token, tokens], axis=1)
