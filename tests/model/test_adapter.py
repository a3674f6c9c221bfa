"""The motion adapter: the identity when fresh, the class token untouched, mixing only along
time and locally.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egovideo_jax.model.adapter import MotionAdapter
from tests.helpers.params import perturbed
from tests.helpers.tiny_model import PATCHES, WIDTH, _max_diff

# ---------------------------------------------------------------------------------------------
# 9. Motion adapter: class token untouched, mixing only along time
# ---------------------------------------------------------------------------------------------

ADAPTER_FRAMES = 16


@pytest.fixture(scope='module')
def adapter(fresh):
    module = MotionAdapter(ADAPTER_FRAMES)
    x = jnp.asarray(np.random.default_rng(5).standard_normal(
        (1, 1 + ADAPTER_FRAMES * PATCHES, WIDTH)), jnp.float32)
    # A fresh model's block-0 adapter (same module, width 64): no extra init to compile.
    fresh_params = fresh['slowfast']['visual']['blocks_0']['adapter']
    shapes = jax.tree_util.tree_map(lambda v: v.shape, nn.unbox(
        jax.eval_shape(module.init, jax.random.PRNGKey(0), x)['params']))
    assert jax.tree_util.tree_map(np.shape, dict(fresh_params)) == dict(shapes)
    apply = jax.jit(lambda p, x: module.apply({'params': p}, x))
    return apply, fresh_params, perturbed(fresh_params, seed=2, scale=0.1), x


def test_motion_adapter_fresh_is_identity(adapter):
    apply, fresh_params, _, x = adapter
    np.testing.assert_array_equal(np.asarray(apply(fresh_params, x)), np.asarray(x))


@pytest.mark.parametrize('frame,changed', [(5, {4, 5, 6}), (0, {0, 1}), (15, {14, 15})])
def test_motion_adapter_is_temporal_and_local(adapter, frame, changed):
    apply, _, p, x = adapter
    patch = 2
    index = 1 + frame * PATCHES + patch
    bump = np.random.default_rng(6).standard_normal(WIDTH).astype(np.float32)
    y0 = np.asarray(apply(p, x))
    y1 = np.asarray(apply(p, x.at[0, index].add(bump)))
    # The class token passes through unchanged.
    np.testing.assert_array_equal(y0[:, 0], np.asarray(x[:, 0]))
    np.testing.assert_array_equal(y1[:, 0], np.asarray(x[:, 0]))
    # The adapter does act on patch tokens (its up_proj is non-zero here).
    assert _max_diff(y0[:, 1:], x[:, 1:]) > 1e-3

    diff = np.abs(y1 - y0)[0, 1:].max(axis=-1).reshape(ADAPTER_FRAMES, PATCHES)
    expected = np.zeros_like(diff, dtype=bool)
    expected[sorted(changed), patch] = True
    assert np.all(diff[expected] > 1e-4), diff[:, patch]
    assert np.all(diff[~expected] == 0), np.argwhere(diff != 0)


@pytest.mark.parametrize('layer, reference', [  # nn.Conv with the adapter's initialisers
    ('dwconv', lambda c: nn.Conv(c, (3,), padding=((1, 1),), feature_group_count=c,
                                 kernel_init=nn.initializers.normal(np.sqrt(2 / 3)))),
    ('conv', lambda c: nn.Conv(c, (1,), kernel_init=nn.initializers.normal(np.sqrt(2 / c)))),
])
def test_adapter_convolutions_equal_flax_conv(layer, reference):
    """The adapter's convolutions (shifted multiply-adds, one product: fast gradients on CPU)
    are nn.Conv's function with its parameters: same initial values from the same key, same
    outputs and gradients (parameters and input)."""
    from egovideo_jax.model.adapter import PointwiseConv, TemporalDepthwiseConv
    channels = 12
    ours = TemporalDepthwiseConv() if layer == 'dwconv' else PointwiseConv(channels)
    conv = reference(channels)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 16, channels)), jnp.float32)
    params = nn.unbox(ours.init(jax.random.PRNGKey(3), x)['params'])
    conv_params = conv.init(jax.random.PRNGKey(3), x)['params']
    for name in ('kernel', 'bias'):
        np.testing.assert_array_equal(params[name], conv_params[name])
    params = perturbed(params, seed=4, scale=0.5)  # a non-zero bias too

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply({'params': p}, x)))

    np.testing.assert_allclose(ours.apply({'params': params}, x),
                               conv.apply({'params': params}, x), atol=1e-5)
    ours_grads = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    conv_grads = jax.grad(loss(conv), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree_util.tree_leaves(ours_grads),
                         jax.tree_util.tree_leaves(conv_grads)):
        np.testing.assert_allclose(got, want, atol=1e-4)
