"""`attention='splash'`: the Pallas TPU splash kernel, run here in Pallas interpret mode.

Covers: block sizes and padding, what 'auto' picks per platform (and that the platform comes
from the mesh in context), outputs and gradients against jax.nn.dot_product_attention's XLA
path (f32 and bf16, lengths that need padding, causal and not), the tiny EgoVideo model,
the shard_map path on 8 simulated CPU devices (in a subprocess), and, where libtpu is
installed, that the real kernel compiles for a v5p TPU topology from this CPU host.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from egovideo_jax.model import EgoVideo, get_model_config
from egovideo_jax.model.encoder import init_params
from egovideo_jax.model.transformer import (
    resolve_attention,
    splash_attention,
    splash_block_size,
    target_platform,
)
from tests.helpers.params import perturbed

REPO = Path(__file__).resolve().parents[2]
# Lengths the models use: B/16 4 and 16 frames, L/14-336 4 and 16 frames, text.
MODEL_LENGTHS = (785, 3137, 2305, 9217, 77)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _qkv(shape, dtype=jnp.float32):
    return tuple(jax.random.normal(jax.random.PRNGKey(i), shape).astype(dtype)
                 for i in range(3))


def _xla(q, k, v, causal):
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation='xla')


def _splash(q, k, v, causal):
    return splash_attention(q, k, v, causal)


def _output_and_grads(attend, q, k, v, causal):
    """(output, d<out, cos(out)>/d(q, k, v)) in one compiled function."""
    def run(q, k, v):
        out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, causal), q, k, v)
        return out, vjp(jnp.cos(out))
    return jax.jit(run)(q, k, v)


# ---------------------------------------------------------------------------------------------
# Choice of implementation and blocks
# ---------------------------------------------------------------------------------------------

def test_blocks_divide_the_padded_lengths():
    expected = {77: 128, 200: 256, 300: 384, 512: 512, 785: 128, 2305: 512, 3137: 512,
                9217: 512}
    for length, block in expected.items():
        assert splash_block_size(length) == block, length
        padding = (-length) % block
        assert block % 128 == 0 and padding <= max(length // 6, 127), length


def test_auto_picks_splash_on_tpu_and_keeps_the_cpu_choice():
    for length in MODEL_LENGTHS[:-1]:
        assert resolve_attention('auto', length, platform='tpu') == 'splash'
    assert resolve_attention('auto', 77, platform='tpu') == 'xla'
    assert resolve_attention('auto', 3137, platform='cpu') == 'chunked'
    assert resolve_attention('auto', 785, platform='cpu') == 'xla'
    assert resolve_attention('auto', 3137, platform='gpu') == 'xla'
    assert resolve_attention('splash', 77, platform='cpu') == 'splash'


def test_platform_comes_from_the_mesh_in_context():
    assert target_platform() == jax.default_backend()
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ('data', 'fsdp', 'tensor'))
    with jax.set_mesh(mesh):
        assert target_platform() == mesh.devices.flat[0].platform


# ---------------------------------------------------------------------------------------------
# Same function as the XLA path
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('length,head_dim,causal', [
    (77, 64, True),    # the text tower: padded to 128
    (200, 32, False),  # padded to 256
    (300, 64, True),   # padded to 384
    (256, 32, False),  # already a block multiple: no segment ids
])
def test_splash_matches_xla_f32(length, head_dim, causal):
    q, k, v = _qkv((2, length, 2, head_dim))
    out_xla, grads_xla = _output_and_grads(_xla, q, k, v, causal)
    out_splash, grads_splash = _output_and_grads(_splash, q, k, v, causal)
    assert _max_diff(out_xla, out_splash) <= 1e-5
    for name, a, b in zip('qkv', grads_xla, grads_splash):
        assert _max_diff(a, b) <= 1e-4, name


@pytest.mark.slow
@pytest.mark.parametrize('length', [785, 2305, 3137, 9217])
def test_splash_matches_xla_at_the_model_lengths(length):
    """The video towers' sequence lengths (B/16 4 and 16 frames, L/14-336 4 and 16), padded
    to their block multiples, in interpret mode: one example, one head."""
    q, k, v = _qkv((1, length, 1, 64))
    out_xla, grads_xla = _output_and_grads(_xla, q, k, v, False)
    out_splash, grads_splash = _output_and_grads(_splash, q, k, v, False)
    assert _max_diff(out_xla, out_splash) <= 1e-5
    for name, a, b in zip('qkv', grads_xla, grads_splash):
        assert _max_diff(a, b) <= 1e-4, name


@pytest.mark.parametrize('length,causal', [(77, True), (300, False)])
def test_splash_matches_xla_bf16(length, causal):
    """bf16 inputs; both paths are compared with f32 attention of the same (rounded) inputs:
    splash's error must stay within 2x XLA's own bf16 error plus 1/128 (one bf16 ulp at 1)."""
    q, k, v = _qkv((2, length, 2, 64), jnp.bfloat16)
    exact = _output_and_grads(_xla, *(x.astype(jnp.float32) for x in (q, k, v)), causal)
    for x_exact, x_xla, x_splash in zip(jax.tree_util.tree_leaves(exact),
                                        jax.tree_util.tree_leaves(
                                            _output_and_grads(_xla, q, k, v, causal)),
                                        jax.tree_util.tree_leaves(
                                            _output_and_grads(_splash, q, k, v, causal))):
        assert x_splash.dtype == jnp.bfloat16
        assert _max_diff(x_exact, x_splash) <= 2 * _max_diff(x_exact, x_xla) + 2 ** -7


def test_tiny_model_splash_matches_xla():
    config = get_model_config('tiny', 'slowfast')
    params = perturbed(init_params(config, seed=0), seed=1, scale=0.05)
    gen = np.random.default_rng(0)
    size = config.vision.image_size
    slow = jnp.asarray(gen.standard_normal((2, config.vision.num_frames, size, size, 3)),
                       jnp.float32)
    fast = jnp.asarray(gen.standard_normal((2, config.fast_frames, size, size, 3)), jnp.float32)
    tokens = np.zeros((2, config.text.context_length), np.int32)
    tokens[0, :5] = [49406, 320, 1125, 539, 49407]
    tokens[1, :3] = [49406, 2368, 49407]
    outputs = {}
    for attention in ('xla', 'splash'):
        module = EgoVideo(config, attention=attention)
        outputs[attention] = jax.jit(lambda p: module.apply({'params': p}, slow, tokens, fast))(
            params)
    for key in ('video', 'text'):
        assert _max_diff(outputs['xla'][key], outputs['splash'][key]) <= 1e-5, key


# ---------------------------------------------------------------------------------------------
# Under a mesh: shard_map on 8 simulated devices
# ---------------------------------------------------------------------------------------------

def _run_script(script: str, *args, env: dict[str, str]) -> dict:
    """Runs `script` in a fresh interpreter (JAX fixes its devices when it starts) and
    returns the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, '-c', script, *map(str, args)], cwd=REPO,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SHARDED_SCRIPT = r'''
import contextlib, json
import flax.linen as nn
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from egovideo_jax.model.transformer import splash_attention
from egovideo_jax.parallel.sharding import LOGICAL_AXIS_RULES, make_mesh

assert jax.device_count() == 8
mesh = make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
none = contextlib.nullcontext
contexts = {  # (around the jit call, inside the traced function)
    'set_mesh': (lambda: jax.set_mesh(mesh), none),
    'with_mesh': (lambda: mesh, none),
    'use_abstract_mesh': (none, lambda: jax.sharding.use_abstract_mesh(mesh.abstract_mesh)),
}
result = {}
# (3, 3): neither batch (over data x fsdp = 4) nor heads (over tensor = 2) divide: not split.
for batch, heads, context in ((4, 4, 'set_mesh'), (4, 4, 'with_mesh'),
                              (4, 4, 'use_abstract_mesh'), (3, 3, 'set_mesh')):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (batch, 200, heads, 32))
               for i in range(3))
    def loss(q, k, v):
        return jnp.sum(jnp.cos(splash_attention(q, k, v, True)))
    def run(q, k, v):
        return splash_attention(q, k, v, True), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    reference = jax.jit(run)(q, k, v)  # no mesh: one device, no shard_map
    spec = P(('data', 'fsdp'), None, 'tensor') if batch == 4 else P()
    placed = [jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v)]
    outer, inner = contexts[context]
    def traced(q, k, v):
        with inner(), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
            return run(q, k, v)
    with outer():
        jaxpr = str(jax.make_jaxpr(traced)(*placed))
        sharded = jax.jit(traced)(*placed)
    result[f'{batch}x{heads}/{context}'] = {
        'diff': max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree_util.tree_leaves(reference),
                        jax.tree_util.tree_leaves(sharded))),
        'shard_map': 'shard_map' in jaxpr,
        'split': "P(('data', 'fsdp'), None, 'tensor', None)" in jaxpr,
    }
print(json.dumps(result))
'''


def test_sharded_splash_matches_one_device():
    result = _run_script(SHARDED_SCRIPT,
                         env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
    assert len(result) == 4
    for case, checks in result.items():
        assert checks['shard_map'], case
        assert checks['split'] == case.startswith('4x4'), case
        assert checks['diff'] <= 1e-6, case


# ---------------------------------------------------------------------------------------------
# The real kernel compiles for TPU (compile-only devices from libtpu, on this CPU host)
# ---------------------------------------------------------------------------------------------

# Lowers and compiles Attention's forward and backward for v5p:2x2x2 (8 chips, batch over
# 'data') in bf16; prints how many Mosaic kernels the lowered module holds.
TPU_SCRIPT = r'''
import json, sys
import numpy as np
import flax.linen as nn
import jax, jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from egovideo_jax.model.transformer import Attention

batch, length, heads = map(int, sys.argv[1:4])
causal, implementation = sys.argv[4] == 'causal', sys.argv[5]
devices = topologies.get_topology_desc(topology_name='v5p:2x2x2', platform='tpu').devices
mesh = Mesh(np.asarray(devices).reshape(8, 1, 1), ('data', 'fsdp', 'tensor'))
module = Attention(heads, causal=causal, implementation=implementation, dtype=jnp.bfloat16)
shape = (batch, length, heads * 64)
params = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct(shape, jnp.bfloat16)))
params = jax.tree_util.tree_map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, P())), params)
x = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, P('data')))

def loss(params, x):
    return jnp.sum(module.apply(params, x).astype(jnp.float32) ** 2)

with jax.set_mesh(mesh):
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x)
lowered.compile()
print(json.dumps({'kernels': lowered.as_text().count('tpu_custom_call')}))
'''


def _tpu_kernels(*args) -> int:
    pytest.importorskip('libtpu')
    # libtpu lets one process hold it unless told otherwise; other test processes may.
    return _run_script(TPU_SCRIPT, *args, env={'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'})['kernels']


def test_splash_compiles_for_tpu_text_shape():
    # Forward, dq and dkv kernels; the causal 77-token text padded to one 128 block.
    assert _tpu_kernels(8, 77, 8, 'causal', 'splash') == 3


@pytest.mark.slow
def test_splash_compiles_for_tpu_b16_fast_branch():
    # 'auto' must find the TPU from the mesh although this host's back-end is the CPU.
    assert _tpu_kernels(8, 3137, 12, 'full', 'auto') == 3
