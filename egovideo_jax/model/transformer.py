"""Transformer pieces shared by the video and text towers.

Every parameter carries logical axis names so the trainer can shard it by rules:
  embed (model width), mlp (MLP hidden), heads, kv (head dim), vocab, patch (flattened
  patch pixels), adapter / adapter_in (adapter bottleneck, output / input side), proj (joint
  embedding), fusion (the concatenated slow+fast embedding), layers (scan axis).
Activations are constrained at block boundaries to (batch, length, embed).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from egovideo_jax.model.adapter import Dtype, MotionAdapter, logical

# Names accepted by `remat_policy`; None or 'none' disables rematerialisation.
REMAT_POLICIES: dict[str, Callable | None] = {
    'full': None,  # jax.checkpoint's default: save nothing, recompute everything
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    'nothing_saveable': jax.checkpoint_policies.nothing_saveable,
}


def _normal(std: float, axes: tuple[str, ...]):
    return logical(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str, ...]):
    return logical(nn.initializers.zeros, axes)


# How attention is computed: 'xla' (jax.nn.dot_product_attention's XLA path: the full
# [length x length] softmax), 'cudnn' (its fused cuDNN kernel: NVIDIA GPUs, bf16/fp16 only),
# 'chunked' (exact, `ATTENTION_CHUNK` queries at a time, each chunk recomputed in the backward
# pass: memory O(chunk x length)), or 'auto': 'chunked' on CPUs for sequences longer than
# `CHUNKED_MIN_LENGTH` tokens (the 16-frame branch: 3137 tokens at B/16), else 'xla'.
ATTENTION_IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'chunked')
ATTENTION_CHUNK = 256
CHUNKED_MIN_LENGTH = 1024


def resolve_attention(implementation: str, length: int) -> str:
    """The implementation 'auto' stands for at this sequence length on this back-end."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f'unknown attention implementation {implementation!r}; choose from '
                         f'{ATTENTION_IMPLEMENTATIONS}')
    if implementation != 'auto':
        return implementation
    if jax.default_backend() == 'cpu' and length > CHUNKED_MIN_LENGTH:
        return 'chunked'
    return 'xla'


def chunked_attention(q, k, v, causal: bool = False, chunk: int = ATTENTION_CHUNK):
    """softmax(q k^T / sqrt(d) [+ causal mask]) v for `[B, L, H, D]` inputs, `chunk` queries
    at a time.

    Exact (every chunk sees every key); the remat keeps one chunk's `[chunk, L]` logits alive
    instead of the whole `[L, L]` matrix, in the forward and the backward pass.
    """
    batch, length, heads, head_dim = q.shape
    padding = (-length) % chunk  # padded query rows are computed, then dropped
    q = jnp.pad(q * jnp.asarray(head_dim ** -0.5, q.dtype),
                ((0, 0), (0, padding), (0, 0), (0, 0)))
    chunks = q.reshape(batch, -1, chunk, heads, head_dim).swapaxes(0, 1)
    starts = jnp.arange(chunks.shape[0]) * chunk

    @jax.checkpoint
    def attend(q_chunk, start):
        logits = jnp.einsum('bqhd,bkhd->bhqk', q_chunk, k,
                            preferred_element_type=jnp.float32)
        if causal:
            rows = start + jnp.arange(chunk)[:, None]
            logits = jnp.where(jnp.arange(length)[None, :] <= rows, logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum('bhqk,bkhd->bqhd', weights, v)

    out = jax.lax.map(lambda args: attend(*args), (chunks, starts)).swapaxes(0, 1)
    return out.reshape(batch, -1, heads, head_dim)[:, :length]


class Attention(nn.Module):
    """Multi-head self-attention (`implementation`: see ATTENTION_IMPLEMENTATIONS)."""
    num_heads: int
    causal: bool = False
    implementation: str = 'auto'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f'width {width} is not divisible by num_heads {self.num_heads}')
        head_dim = width // self.num_heads
        projection = functools.partial(
            nn.DenseGeneral, features=(self.num_heads, head_dim), axis=-1,
            dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=_normal(width ** -0.5, ('embed', 'heads', 'kv')),
            bias_init=_zeros(('heads', 'kv')))
        q = projection(name='query')(x)
        k = projection(name='key')(x)
        v = projection(name='value')(x)
        implementation = resolve_attention(self.implementation, x.shape[1])
        if implementation == 'chunked':
            y = chunked_attention(q, k, v, self.causal)
        else:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal,
                                             implementation=implementation)
        return nn.DenseGeneral(
            width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=_normal(width ** -0.5, ('heads', 'kv', 'embed')),
            bias_init=_zeros(('embed',)), name='out')(y)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""
    hidden_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_normal(width ** -0.5, ('embed', 'mlp')),
                     bias_init=_zeros(('mlp',)), name='fc1')(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=_normal(self.hidden_dim ** -0.5, ('mlp', 'embed')),
                        bias_init=_zeros(('embed',)), name='fc2')(x)


def layer_norm(eps: float, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    """LayerNorm with logical axes; Flax computes its statistics in float32 for bf16 inputs."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                        scale_init=logical(nn.initializers.ones, ('embed',)),
                        bias_init=_zeros(('embed',)), name=name)


class ResidualBlock(nn.Module):
    """Pre-LN block: x += attn(ln_1(x)); x += mlp(ln_2(x)); then the motion adapter if set.

    `adapter_frames` (the number of frames in the token sequence) turns the adapter on; the
    vision tower sets it on the fast branch only. Signature `(x, _) -> (x, None)` so one class runs in a Python loop or under `nn.scan`.
    """
    num_heads: int
    mlp_dim: int
    ln_eps: float
    causal: bool = False
    adapter_frames: int | None = None
    adapter_ratio: float = 0.5
    attention: str = 'auto'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, _=None):
        norm = functools.partial(layer_norm, self.ln_eps, self.dtype, self.param_dtype)
        x = x + Attention(self.num_heads, self.causal, self.attention, self.dtype,
                          self.param_dtype, name='attn')(norm('ln_1')(x))
        x = x + Mlp(self.mlp_dim, self.dtype, self.param_dtype, name='mlp')(norm('ln_2')(x))
        if self.adapter_frames is not None:
            x = MotionAdapter(self.adapter_frames, self.adapter_ratio, self.dtype,
                              self.param_dtype, name='adapter')(x)
        return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), None


def apply_blocks(block_cls: type[nn.Module], x, *, num_layers: int, scan: bool,
                 remat_policy: str | None, **block_kwargs):
    """Runs `num_layers` blocks: unrolled (`blocks_{i}`) or scanned (`blocks`, stacked params).

    Call it from inside a compact `__call__`; the blocks become that module's children.
    """
    if remat_policy not in (None, 'none'):
        if remat_policy not in REMAT_POLICIES:
            raise ValueError(f'unknown remat_policy {remat_policy!r}; '
                             f'choose from none, {", ".join(REMAT_POLICIES)}')
        block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[remat_policy],
                             prevent_cse=not scan)
    if scan:
        stack = nn.scan(block_cls, variable_axes={'params': 0}, split_rngs={'params': True},
                        length=num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
        x, _ = stack(**block_kwargs, name='blocks')(x, None)
        return x
    for i in range(num_layers):
        x, _ = block_cls(**block_kwargs, name=f'blocks_{i}')(x, None)
    return x
