"""Transformer pieces shared by the video and text towers.

Every parameter carries logical axis names so the trainer can shard it by rules:
  embed (model width), mlp (MLP hidden), heads, kv (head dim), vocab, patch (flattened
  patch pixels), adapter / adapter_in (adapter bottleneck, output / input side), proj (joint
  embedding), fusion (the concatenated slow+fast embedding), layers (scan axis).
Activations are constrained at block boundaries to (batch, length, embed).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax._src import mesh as jax_mesh
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from egovideo_jax.io.choices import check_choice
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
# 'chunked' (exact, at most `ATTENTION_CHUNK` queries of one head at a time, each chunk
# recomputed in the backward pass: memory O(chunk x length)), 'splash' (the Pallas TPU splash-attention kernel; off TPU it
# runs in Pallas interpret mode: exact but slow, for tests), or 'auto': 'splash' on TPUs from
# `SPLASH_MIN_LENGTH` tokens, 'chunked' on CPUs for sequences longer than `CHUNKED_MIN_LENGTH`
# tokens (the 16-frame branch: 3137 tokens at B/16), else 'xla'.
ATTENTION_IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'chunked', 'splash')
ATTENTION_CHUNK = 512
CHUNKED_MIN_LENGTH = 1024
SPLASH_MIN_LENGTH = 128  # shorter (the 77-token text) stays on XLA: a block is mostly padding
SPLASH_BLOCKS = (512, 256, 128)  # 128 (the TPU lane count) is the smallest the kernel takes


def context_mesh() -> jax.sharding.Mesh | jax.sharding.AbstractMesh | None:
    """The mesh the caller traces under: `jax.set_mesh(mesh)` around the jit call or
    `jax.sharding.use_abstract_mesh(mesh.abstract_mesh)` inside the traced function (the
    context flax's logical constraints read too), else the deprecated `with mesh:` (only jax's
    private state has it; flax ignores it); None without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh
    legacy = jax_mesh.thread_resources.env.physical_mesh
    return None if legacy.empty else legacy


def _mesh_platform(mesh) -> str | None:
    if isinstance(mesh, jax.sharding.AbstractMesh):
        device = mesh.abstract_device
        return None if device is None else device.platform
    return mesh.devices.flat[0].platform


def target_platform() -> str:
    """The platform the attention being traced will run on: that of the devices of the mesh
    in context (so compiling for TPU devices from a CPU host picks the TPU kernel), else
    `jax.default_backend()`."""
    mesh = context_mesh()
    platform = None if mesh is None else _mesh_platform(mesh)
    return platform or jax.default_backend()


def resolve_attention(implementation: str, length: int, platform: str | None = None) -> str:
    """The implementation 'auto' stands for at this sequence length on `platform` (default:
    `target_platform()`)."""
    check_choice(implementation, ATTENTION_IMPLEMENTATIONS, 'attention')
    if implementation != 'auto':
        return implementation
    platform = platform or target_platform()
    if platform == 'tpu' and length >= SPLASH_MIN_LENGTH:
        return 'splash'
    if platform == 'cpu' and length > CHUNKED_MIN_LENGTH:
        return 'chunked'
    return 'xla'


def query_chunks(length: int, chunk: int = ATTENTION_CHUNK) -> tuple[int, int]:
    """(number of chunks, queries per chunk) for `length` queries: the fewest chunks of at most
    `chunk` queries, as equal as a multiple of 8 allows, so little padding is computed (3137
    -> 7 x 456, not 7 x 512)."""
    count = -(-length // chunk)
    size = -(-length // count)
    return count, -(-size // 8) * 8


def chunked_attention(q, k, v, causal: bool = False, chunk: int = ATTENTION_CHUNK):
    """softmax(q k^T / sqrt(d) [+ causal mask]) v for `[B, L, H, D]` inputs, one head's chunk
    of at most `chunk` queries at a time.

    Exact (every query sees every key). A step is one `[chunk, D] x [D, L]` product, the
    softmax of its `[chunk, L]` logits and one `[chunk, L] x [L, D]` product: a few MB that
    stay in the CPU's caches (a chunk of every head at once, `[B, H, chunk, L]`, streams
    through memory and runs 3x slower at 3137 tokens; benchmarks/attention.py). The remat
    keeps one step's logits alive in the backward pass too.
    """
    batch, length, heads, head_dim = q.shape
    count, size = query_chunks(length, chunk)

    def heads_major(x):  # [B, L, H, D] -> [B * H, L, D]
        return x.transpose(0, 2, 1, 3).reshape(batch * heads, length, head_dim)

    queries = jnp.pad(heads_major(q * jnp.asarray(head_dim ** -0.5, q.dtype)),
                      ((0, 0), (0, count * size - length), (0, 0)))  # padded rows are dropped
    queries = queries.reshape(batch * heads * count, size, head_dim)
    keys, values = heads_major(k), heads_major(v)

    @jax.checkpoint
    def attend(q_chunk, step):
        head_keys = jax.lax.dynamic_index_in_dim(keys, step // count, keepdims=False)
        head_values = jax.lax.dynamic_index_in_dim(values, step // count, keepdims=False)
        logits = jnp.einsum('qd,kd->qk', q_chunk, head_keys,
                            preferred_element_type=jnp.float32)
        if causal:
            rows = (step % count) * size + jnp.arange(size)[:, None]
            logits = jnp.where(jnp.arange(length)[None, :] <= rows, logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum('qk,kd->qd', weights, head_values)

    out = jax.lax.map(lambda args: attend(*args), (queries, jnp.arange(queries.shape[0])))
    out = out.reshape(batch, heads, count * size, head_dim)[:, :, :length]
    return out.transpose(0, 2, 1, 3)


def splash_block_size(length: int) -> int:
    """The kernel's block (and padding multiple) for `length` tokens: one block up to 512,
    else the largest of `SPLASH_BLOCKS` whose padding adds at most 1/6 of the length (big
    blocks run faster, padding is wasted work): 3137 -> 512 (3584), 785 -> 128 (896)."""
    single = -(-length // SPLASH_BLOCKS[-1]) * SPLASH_BLOCKS[-1]
    if single <= SPLASH_BLOCKS[0]:
        return single
    for block in SPLASH_BLOCKS:
        if (-length) % block <= length // 6:
            return block
    return SPLASH_BLOCKS[-1]


def _splash_local(q, k, v, causal: bool, interpret: bool):
    """Splash attention on this device's `[B, L, H, D]` shard: pad L to a block multiple,
    keep real queries off padded keys with segment ids, slice the padding off."""
    batch, length, heads, head_dim = q.shape
    block = splash_block_size(length)
    padded = -(-length // block) * block

    def to_kernel_layout(x):  # [B, L, H, D] -> [B, H, padded, D]
        return jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0))).swapaxes(1, 2)

    q = q * jnp.asarray(head_dim ** -0.5, q.dtype)  # the kernel does not scale
    head_mask = (splash.CausalMask((padded, padded)) if causal
                 else splash.FullMask((padded, padded)))
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([head_mask] * heads), head_shards=1, q_seq_shards=1,
        block_sizes=splash.BlockSizes(
            block_q=block, block_kv=block, block_kv_compute=block,
            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
            block_q_dq=block, block_kv_dq=block),
        interpret=interpret)
    segments = None
    if padded > length:
        ids = (jnp.arange(padded) >= length).astype(jnp.int32)  # real 0, padding 1
        segments = splash.SegmentIds(q=ids, kv=ids)
    out = jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=segments))(
        *map(to_kernel_layout, (q, k, v)))
    return out.swapaxes(1, 2)[:, :length]


def _mesh_axes_for(logical: str, size: int, mesh, rules) -> str | tuple[str, ...] | None:
    """The mesh axes the rules give `logical`, those of size > 1 in `mesh`; None (do not
    split) when they do not divide `size` (each device then computes that whole axis)."""
    axes = nn.logical_to_mesh_axes((logical,), rules)[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a in mesh.axis_names and mesh.shape[a] > 1)
    if not axes or size % math.prod(mesh.shape[a] for a in axes):
        return None
    return axes


def splash_attention(q, k, v, causal: bool = False):
    """softmax(q k^T / sqrt(d) [+ causal mask]) v for `[B, L, H, D]` inputs with the Pallas
    splash kernel (interpreted unless `target_platform()` is TPU).

    Under a multi-device mesh the kernel runs per device in `shard_map`: batch split as the
    logical-axis rules in context say for 'batch', heads as for 'heads' (the train step
    traces under egovideo_jax.parallel.sharding.LOGICAL_AXIS_RULES; without rules in context the
    batch is split over every mesh axis and heads stay whole), length and head dim whole.
    """
    attend = functools.partial(_splash_local, causal=causal,
                               interpret=target_platform() != 'tpu')
    mesh = context_mesh()
    if mesh is None or math.prod(mesh.shape.values()) == 1:
        return attend(q, k, v)
    rules = nn.get_logical_axis_rules() or (('batch', tuple(mesh.axis_names)),)
    spec = jax.sharding.PartitionSpec(_mesh_axes_for('batch', q.shape[0], mesh, rules), None,
                                      _mesh_axes_for('heads', q.shape[2], mesh, rules), None)
    return jax.shard_map(attend, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                         check_vma=False)(q, k, v)


class HeadsDense(nn.Module):
    """A dense layer into or out of the `[heads, head_dim]` layout: `x @ kernel + bias` over
    `in_axes` trailing input axes, with `kernel` of shape `in_shape + out_shape`.

    Same parameters as `nn.DenseGeneral`, but the kernel is created in its final shape: flax
    initialises DenseGeneral's kernel flattened and reshapes it, and with sharding rules in
    context the flattened value meets its 3-name logical spec (an error)."""
    out_shape: tuple[int, ...]
    in_axes: int
    kernel_axes: tuple[str, ...]
    bias_axes: tuple[str, ...]
    init_std: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[-self.in_axes:]
        kernel = self.param('kernel', _normal(self.init_std, self.kernel_axes),
                            in_shape + self.out_shape, self.param_dtype)
        bias = self.param('bias', _zeros(self.bias_axes), self.out_shape, self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        contract = tuple(range(x.ndim - self.in_axes, x.ndim))
        y = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.in_axes))), ((), ())))
        return y + bias


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
            HeadsDense, (self.num_heads, head_dim), 1, ('embed', 'heads', 'kv'),
            ('heads', 'kv'), width ** -0.5, self.dtype, self.param_dtype)
        q = projection(name='query')(x)
        k = projection(name='key')(x)
        v = projection(name='value')(x)
        implementation = resolve_attention(self.implementation, x.shape[1])
        if implementation == 'chunked':
            y = chunked_attention(q, k, v, self.causal)
        elif implementation == 'splash':
            y = splash_attention(q, k, v, self.causal)
        else:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal,
                                             implementation=implementation)
        return HeadsDense((width,), 2, ('heads', 'kv', 'embed'), ('embed',), width ** -0.5,
                          self.dtype, self.param_dtype, name='out')(y)


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
        check_choice(remat_policy, ('none', *REMAT_POLICIES), 'remat_policy')
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
