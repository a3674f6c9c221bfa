"""Which parameters each branch trains (the fast branch reaches only its adapters, the slow
branch only the backbone), and zero-initialised adapters are the identity.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from egovideo_jax.model import EgoVideo
from egovideo_jax.model.layout import stack_layers
from tests.helpers.tiny_model import (
    ADAPTER_LEAVES,
    FAST,
    LAYERS,
    SLOW,
    W_VIDEO,
    _assert_trees_close,
    _fast_branch,
    _flat,
    _is_adapter,
    _is_backbone,
    _max_diff,
    _visual,
    fast_branch_grad,
    module_for,
)

# ---------------------------------------------------------------------------------------------
# 6. Which parameters each branch trains
# ---------------------------------------------------------------------------------------------

def test_fast_branch_grads_only_reach_adapters(params):
    grads = _flat(fast_branch_grad()(params['slowfast']))
    first, last = 'visual/blocks_0/', f'visual/blocks_{LAYERS - 1}/'
    first_adapter = [n for n in grads if _is_adapter(n) and n.startswith(first)]
    last_adapter = [n for n in grads if _is_adapter(n) and n.startswith(last)]
    assert len(first_adapter) == len(last_adapter) == ADAPTER_LEAVES
    for name, g in grads.items():
        if not _is_adapter(name):
            # Backbone (frozen in the fast branch), text tower, logit_scale, fusion: exactly 0.
            assert np.all(g == 0), f'{name}: max |grad| {np.abs(g).max():.3g}'
    for name in first_adapter:
        assert np.any(grads[name] != 0), f'{name} gets no gradient'
    # The last block's adapter only rewrites patch tokens, and after the last block only the
    # class token is pooled (ln_post(x[:, 0])); no later attention mixes patch tokens into it.
    # So nothing downstream reads that adapter's output: its gradient is exactly zero.
    for name in last_adapter:
        assert np.all(grads[name] == 0), f'{name}: max |grad| {np.abs(grads[name]).max():.3g}'


def test_fast_branch_grads_scanned(params):
    unrolled = fast_branch_grad()(params['slowfast'])
    scanned = fast_branch_grad(scan=True)(stack_layers(params['slowfast']))
    flat = _flat(scanned)
    adapter = [n for n in flat if _is_adapter(n)]
    assert len(adapter) == ADAPTER_LEAVES
    for name, g in flat.items():
        if _is_adapter(name):
            assert g.shape[0] == LAYERS, name
            assert np.any(g[0] != 0), f'{name}[0] gets no gradient'
            assert np.all(g[LAYERS - 1] == 0), f'{name}[-1]: max |grad| {np.abs(g[-1]).max()}'
        else:
            assert np.all(g == 0), f'{name}: max |grad| {np.abs(g).max():.3g}'
    # 1e-6 relative to each leaf's scale (grads up to ~6 here; observed diffs <= 1e-6).
    _assert_trees_close(stack_layers(unrolled), scanned, 1e-6, 'scanned vs unrolled grad ',
                        relative=True)


def test_slow_branch_grads_reach_backbone_not_adapters(params):
    module = module_for('slowfast')
    grad_fn = jax.jit(jax.grad(lambda p: jnp.sum(
        module.apply({'params': p}, SLOW, method=_visual) ** 2)))
    grads = _flat(grad_fn(params['slowfast']))
    backbone = [n for n in grads if _is_backbone(n)]
    assert len(backbone) > 20
    for name, g in grads.items():
        if _is_backbone(name):
            if name.endswith('attn/key/bias'):
                # softmax(q.(k + b)) is invariant to the key bias (it shifts every logit of a
                # query equally): its true gradient is 0, numerically only rounding noise.
                continue
            assert np.any(g != 0), f'{name} gets no gradient'
        else:  # adapters (unused on the slow branch), text tower, logit_scale, fusion
            assert np.all(g == 0), f'{name}: max |grad| {np.abs(g).max():.3g}'


def _normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _fuse(p, e_slow, e_fast):
    return _normalize(jnp.concatenate([e_slow, e_fast], axis=-1) @ p['slowfast_projection'])


def test_slowfast_backbone_learns_only_through_slow_branch(params):
    module = module_for('slowfast')
    p = params['slowfast']

    def model_loss(p):
        e = module.apply({'params': p}, SLOW, FAST, method=EgoVideo.encode_video)
        return jnp.sum(e * W_VIDEO)

    def slow_only_loss(p):
        # Fast embedding with every parameter held constant; slow branch and fusion as usual.
        frozen = jax.tree_util.tree_map(jax.lax.stop_gradient, p)
        e_fast = module.apply({'params': frozen}, FAST, True, method=_visual)
        e_slow = module.apply({'params': p}, SLOW, method=_visual)
        return jnp.sum(_fuse(p, e_slow, e_fast) * W_VIDEO)

    def unfrozen_loss(p):
        # What the gradients would be if the fast branch also trained the backbone.
        e_fast = module.apply({'params': p}, FAST, True, method=_visual)
        e_slow = module.apply({'params': p}, SLOW, method=_visual)
        return jnp.sum(_fuse(p, e_slow, e_fast) * W_VIDEO)

    values = [jax.jit(jax.value_and_grad(f))(p)
              for f in (model_loss, slow_only_loss, unfrozen_loss)]
    (v_model, g_model), (v_slow, g_slow), (v_unfrozen, g_unfrozen) = values
    # Same forward function three ways.
    assert abs(float(v_model) - float(v_slow)) <= 1e-6
    assert abs(float(v_model) - float(v_unfrozen)) <= 1e-6

    g_model, g_slow, g_unfrozen = _flat(g_model), _flat(g_slow), _flat(g_unfrozen)
    for name, g in g_model.items():
        if _is_adapter(name):
            continue
        diff = _max_diff(g, g_slow[name])
        assert diff <= 1e-6, f'{name}: model vs slow-only grad max |diff| {diff:.3g}'
    # Not vacuous: letting the fast branch train the backbone would change its gradients...
    assert max(_max_diff(g_model[n], g_unfrozen[n]) for n in g_model if _is_backbone(n)) > 1e-4
    # ...and the backbone and the fusion do get gradients.
    assert np.any(g_model['visual/blocks_0/mlp/fc1/kernel'] != 0)
    assert np.any(g_model['slowfast_projection'] != 0)
    # The adapters learn through the full model (block 0), not the last block's.
    for name, g in g_model.items():
        if _is_adapter(name) and name.startswith('visual/blocks_0/'):
            assert np.any(g != 0), f'{name} gets no gradient in the full model'
        if _is_adapter(name) and name.startswith(f'visual/blocks_{LAYERS - 1}/'):
            assert np.all(g == 0), name


# ---------------------------------------------------------------------------------------------
# 7. Zero-initialised adapters are the identity
# ---------------------------------------------------------------------------------------------

def test_fresh_adapters_are_identity(fresh, params):
    module = module_for('slowfast')
    fast_fn = jax.jit(lambda p: module.apply({'params': p}, FAST, method=_fast_branch))
    plain_fn = jax.jit(lambda p: module.apply({'params': p}, FAST, False, method=_visual))

    init = fresh['slowfast']
    flat_init = _flat(init)
    up = [n for n in flat_init if _is_adapter(n) and '/up_proj/' in n]
    assert len(up) == 2 * LAYERS and all(np.all(flat_init[n] == 0) for n in up)

    # Fresh parameters, and a moved backbone with adapters still at their init.
    flat_pert = _flat(params['slowfast'])
    moved_backbone = traverse_util.unflatten_dict(
        {n: (flat_init[n] if _is_adapter(n) else flat_pert[n]) for n in flat_init}, sep='/')
    for p in (init, moved_backbone):
        out, ref = fast_fn(p), plain_fn(p)
        assert _max_diff(out, ref) <= 1e-6

    # Moving only the adapters changes the fast branch.
    moved_adapters = traverse_util.unflatten_dict(
        {n: (flat_pert[n] if _is_adapter(n) else flat_init[n]) for n in flat_init}, sep='/')
    assert _max_diff(fast_fn(moved_adapters), plain_fn(moved_adapters)) > 1e-3
