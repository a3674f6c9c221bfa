"""EgoVideo model tests on the 'tiny' variant (image 32, patch 16, width 64, 2 layers, embed 32).

Covers: output shapes and norms, scanned vs unrolled layers, rematerialisation, bf16 compute,
logical-axis annotations, which parameters each branch trains, the identity-initialised
motion adapter and its locality, temporal-table resizing against PyTorch, input validation.

Every jitted function is built once per configuration (`functools.lru_cache`) and reused, and
parameters are passed as arguments, so the file compiles each model variant only once.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from egovideo_jax.model import VARIANTS, EgoVideo, get_model_config
from egovideo_jax.model.adapter import MotionAdapter
from egovideo_jax.model.egovideo import dummy_inputs
from egovideo_jax.model.encoder import init_params
from egovideo_jax.model.layout import stack_layers, unstack_layers
from egovideo_jax.model.transformer import chunked_attention, resolve_attention
from egovideo_jax.model.vit import temporal_resize_matrix
from tests.helpers.params import perturbed
from tests.helpers.torch_reference import resize_temporal_table

CFG = {mode: get_model_config('tiny', mode) for mode in ('single', 'slowfast')}
TINY = CFG['single']
LAYERS = TINY.vision.layers
WIDTH = TINY.vision.width
EMBED = TINY.embed_dim
SIZE = TINY.vision.image_size
PATCHES = TINY.vision.grid ** 2
ADAPTER_LEAVES = 9  # down_proj k/b, dwconv k/b, conv k/b, up_proj k/b, gamma


def _video(frames, batch=2, seed=0, size=SIZE):
    gen = np.random.default_rng(seed)
    return jnp.asarray(gen.standard_normal((batch, frames, size, size, 3)), jnp.float32)


def _tokens():
    tokens = np.zeros((2, TINY.text.context_length), np.int32)
    tokens[0, :5] = [49406, 320, 1125, 539, 49407]
    tokens[1, :3] = [49406, 2368, 49407]
    return jnp.asarray(tokens)


SLOW = _video(TINY.vision.num_frames, seed=1)   # 4 frames
FAST = _video(CFG['slowfast'].fast_frames, seed=2)  # 16 frames
TOKENS = _tokens()
# Fixed random directions for linear losses (a sum of squares of an L2-normalised embedding
# is constant and has zero gradient).
W_VIDEO = jnp.asarray(np.random.default_rng(3).standard_normal((2, EMBED)), jnp.float32)
W_TEXT = jnp.asarray(np.random.default_rng(4).standard_normal((2, EMBED)), jnp.float32)


def _flat(tree):
    """{'a/b/c': np.ndarray} view of a nested parameter dict."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(tree), sep='/').items()}


def _is_adapter(name):
    return '/adapter/' in name


def _is_backbone(name):
    return name.startswith('visual/') and not _is_adapter(name)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _assert_trees_close(a, b, atol, what='', relative=False):
    """Leafwise max |a - b| <= atol (times max(1, max |a|) per leaf if `relative`)."""
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert fa[name].shape == fb[name].shape, name
        tol = atol * max(1.0, float(np.abs(fa[name]).max())) if relative else atol
        diff = _max_diff(fa[name], fb[name])
        assert diff <= tol, f'{what}{name}: max |diff| {diff:.3g} > {tol:.3g}'


# ---------------------------------------------------------------------------------------------
# Shared parameters and compiled functions
# ---------------------------------------------------------------------------------------------

def _without_fast_branch(tree):
    """Slowfast parameters minus the adapters and the fusion: the single-branch layout."""
    flat = traverse_util.flatten_dict(dict(tree), sep='/')
    return traverse_util.unflatten_dict(
        {k: v for k, v in flat.items() if not _is_adapter(k) and k != 'slowfast_projection'},
        sep='/')


@pytest.fixture(scope='module')
def fresh():
    """Freshly initialised (unboxed) parameters per mode: adapters' up_proj is zero.

    `init_params` compiles an init per config (seconds each), so the single-branch tree is
    the slowfast one without adapters and fusion; it is checked against the single layout.
    """
    slowfast = init_params(CFG['slowfast'], seed=0)
    single = _without_fast_branch(slowfast)
    expected = traverse_util.flatten_dict(
        dict(nn.unbox(abstract_variables('single')['params'])), sep='/')
    assert {k: v.shape for k, v in _flat(single).items()} == \
        {k: v.shape for k, v in expected.items()}
    return {'single': single, 'slowfast': slowfast}


@pytest.fixture(scope='module')
def params(fresh):
    """Every leaf moved off its init (non-zero up_proj, temporal table, ...)."""
    return {mode: perturbed(p, seed=1, scale=0.05) for mode, p in fresh.items()}


@functools.lru_cache(maxsize=None)
def module_for(mode, scan=False, remat=None, dtype=jnp.float32):
    return EgoVideo(CFG[mode], dtype=dtype, scan_layers=scan, remat_policy=remat)


@functools.lru_cache(maxsize=None)
def forward(mode, scan=False, remat=None, dtype=jnp.float32):
    """jit(params, video, fast) -> __call__ outputs (video, text, logit_scale)."""
    module = module_for(mode, scan, remat, dtype)
    return jax.jit(lambda p, video, fast: module.apply({'params': p}, video, TOKENS, fast))


def _training_loss(out):
    return (jnp.sum(out['video'] * W_VIDEO) + jnp.sum(out['text'] * W_TEXT)
            + out['logit_scale'])


@functools.lru_cache(maxsize=None)
def loss_and_grad(mode, scan=False, remat=None):
    """jit(params, video, fast) -> ((loss, outputs), grads) of a loss over all outputs."""
    module = module_for(mode, scan, remat)

    def loss(p, video, fast):
        out = module.apply({'params': p}, video, TOKENS, fast)
        return _training_loss(out), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@functools.lru_cache(maxsize=None)
def abstract_variables(mode, scan=False, dtype=jnp.float32):
    """Boxed (LogicallyPartitioned) variables of `EgoVideo.init`, shapes only."""
    module = EgoVideo(CFG[mode], dtype=dtype, scan_layers=scan)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), *dummy_inputs(CFG[mode]))


def _fast_branch(m, fast):
    return m._fast_branch(fast)


def _visual(m, video, use_adapters=False):
    return m.visual(video, use_adapters=use_adapters)


@functools.lru_cache(maxsize=None)
def fast_branch_grad(scan=False):
    """Gradient of sum(e_fast ** 2) (un-normalised fast-branch embedding)."""
    module = module_for('slowfast', scan)
    return jax.jit(jax.grad(lambda p: jnp.sum(
        module.apply({'params': p}, FAST, method=_fast_branch) ** 2)))


# ---------------------------------------------------------------------------------------------
# 1. Shapes, unit norms, logit scale
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode,frames', [('single', 4), ('single', 16), ('slowfast', None)])
def test_output_shapes_norms_and_logit_scale(fresh, params, mode, frames):
    video = SLOW if frames in (None, 4) else FAST
    fast = FAST if mode == 'slowfast' else None
    for p in (fresh[mode], params[mode]):
        out = forward(mode)(p, video, fast)
        assert set(out) == {'video', 'text', 'logit_scale'}
        assert out['video'].shape == (2, EMBED) and out['video'].dtype == jnp.float32
        assert out['text'].shape == (2, EMBED) and out['text'].dtype == jnp.float32
        assert out['logit_scale'].shape == ()
        for key in ('video', 'text'):
            norms = np.linalg.norm(np.asarray(out[key]), axis=-1)
            np.testing.assert_allclose(norms, 1.0, atol=1e-5, err_msg=key)
            # Two different inputs give two different embeddings (nothing collapsed).
            assert _max_diff(out[key][0], out[key][1]) > 1e-3, key
        np.testing.assert_allclose(float(out['logit_scale']),
                                   float(np.exp(p['logit_scale'])), rtol=1e-6)
    np.testing.assert_allclose(float(forward(mode)(fresh[mode], video, fast)['logit_scale']),
                               1 / 0.07, atol=1e-5)


def test_single_video_depends_on_frame_count(params):
    # 16 frames vs the same video's first 4: different inputs and a resized temporal table.
    out4 = forward('single')(params['single'], FAST[:, :4], None)['video']
    out16 = forward('single')(params['single'], FAST, None)['video']
    assert _max_diff(out4, out16) > 1e-3


# ---------------------------------------------------------------------------------------------
# 2. Scanned layers == unrolled layers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', ['single', 'slowfast'])
def test_scan_layers_matches_unrolled(params, mode):
    p = params[mode]
    stacked = stack_layers(p)
    # The stacked tree has exactly the layout (paths and shapes) the scanned module inits.
    expected = nn.unbox(abstract_variables(mode, scan=True)['params'])
    flat_expected = {k: v.shape for k, v in
                     traverse_util.flatten_dict(dict(expected), sep='/').items()}
    flat_stacked = {k: v.shape for k, v in _flat(stacked).items()}
    assert flat_stacked == flat_expected
    assert flat_stacked['visual/blocks/attn/query/kernel'][0] == LAYERS

    fast = FAST if mode == 'slowfast' else None
    unrolled = forward(mode)(p, SLOW, fast)
    scanned = forward(mode, scan=True)(stacked, SLOW, fast)
    for key in ('video', 'text', 'logit_scale'):
        diff = _max_diff(unrolled[key], scanned[key])
        assert diff <= 1e-6, f'{key}: scanned vs unrolled max |diff| {diff:.3g}'


@pytest.mark.parametrize('mode', ['single', 'slowfast'])
def test_unstack_of_stack_is_identity(params, mode):
    p = params[mode]
    roundtrip = unstack_layers(stack_layers(p))
    flat_p, flat_r = _flat(p), _flat(roundtrip)
    assert flat_p.keys() == flat_r.keys()
    for name in flat_p:
        np.testing.assert_array_equal(flat_p[name], flat_r[name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# 3. Rematerialisation changes nothing numerically
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('policy', ['full', 'dots'])
def test_remat_policy_same_outputs_and_grads(params, policy):
    # Single-branch mode: both towers run their blocks under remat, at a third of the compile
    # time of the slowfast graph (the fast branch uses the same block code path).
    p = params['single']
    (loss0, out0), grads0 = loss_and_grad('single')(p, SLOW, None)
    (loss1, out1), grads1 = loss_and_grad('single', remat=policy)(p, SLOW, None)
    assert abs(float(loss0) - float(loss1)) <= 1e-6
    for key in out0:
        assert _max_diff(out0[key], out1[key]) <= 1e-6, key
    # 1e-6 relative to each leaf's largest gradient: recomputation may fuse differently and
    # round differently (observed: 1.5e-6 on text embedding grads of magnitude 4, ~3 ulp).
    _assert_trees_close(grads0, grads1, 1e-6, f'remat={policy} grad ', relative=True)
    # The comparison is not vacuous: both towers get gradients.
    flat = _flat(grads0)
    assert np.any(flat['visual/blocks_0/attn/query/kernel'] != 0)
    assert np.any(flat['textual/blocks_0/mlp/fc1/kernel'] != 0)


def test_unknown_remat_policy_raises():
    module = EgoVideo(CFG['single'], remat_policy='bogus_policy')
    with pytest.raises(ValueError, match='bogus_policy'):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), *dummy_inputs(CFG['single']))


# ---------------------------------------------------------------------------------------------
# 4. bfloat16 compute, float32 parameters
# ---------------------------------------------------------------------------------------------

def test_bf16_compute_fp32_params(params):
    boxed = abstract_variables('slowfast', dtype=jnp.bfloat16)['params']
    dtypes = {name: leaf.dtype for name, leaf in
              traverse_util.flatten_dict(dict(nn.unbox(boxed)), sep='/').items()}
    assert dtypes and all(d == jnp.float32 for d in dtypes.values()), \
        {k: d for k, d in dtypes.items() if d != jnp.float32}

    p = params['slowfast']
    out16 = forward('slowfast', dtype=jnp.bfloat16)(p, SLOW, FAST)
    out32 = forward('slowfast')(p, SLOW, FAST)
    assert out16['video'].dtype == jnp.bfloat16
    assert out16['text'].dtype == jnp.bfloat16
    for key in ('video', 'text'):
        a = np.asarray(out16[key], np.float32)
        b = np.asarray(out32[key], np.float32)
        assert np.all(np.isfinite(a)), key
        cosine = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        assert np.all(cosine > 0.99), f'{key}: cosine {cosine}'
    np.testing.assert_allclose(float(out16['logit_scale']), float(out32['logit_scale']),
                               rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# 5. Logical-axis annotations
# ---------------------------------------------------------------------------------------------

LOGICAL_NAMES = {'embed', 'mlp', 'heads', 'kv', 'vocab', 'patch', 'adapter', 'adapter_in',
                 'proj', 'fusion', 'layers', None}


@pytest.mark.parametrize('mode,scan', [('single', False), ('slowfast', False),
                                       ('slowfast', True)])
def test_every_param_has_logical_axes(mode, scan):
    variables = abstract_variables(mode, scan)
    assert set(variables) == {'params'}
    boxed = jax.tree_util.tree_flatten_with_path(
        variables['params'], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    specs = jax.tree_util.tree_flatten_with_path(
        nn.get_partition_spec(variables)['params'],
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    assert len(boxed) == len(specs) > 0

    def name(path):
        return '/'.join(str(entry.key) for entry in path)

    by_name = {}
    for (path, leaf), (spec_path, spec) in zip(boxed, specs):
        key = name(path)
        assert key == name(spec_path)
        assert isinstance(leaf, nn.LogicallyPartitioned), f'{key} is not annotated'
        assert isinstance(spec, jax.sharding.PartitionSpec), key
        assert len(spec) == leaf.value.ndim == len(leaf.names), \
            f'{key}: spec {spec} for shape {leaf.value.shape}'
        assert set(spec) <= LOGICAL_NAMES, f'{key}: {spec}'
        # The scan axis is the leading axis of exactly the stacked block parameters.
        in_stack = '/blocks/' in f'/{key}'
        assert ('layers' in tuple(spec)) == in_stack, f'{key}: {spec}'
        if in_stack:
            assert spec[0] == 'layers' and leaf.value.shape[0] == LAYERS, f'{key}: {spec}'
        by_name[key] = tuple(spec)

    lead = ('layers',) if scan else ()
    block = 'blocks' if scan else 'blocks_0'
    expected = {
        f'visual/{block}/attn/query/kernel': lead + ('embed', 'heads', 'kv'),
        f'visual/{block}/attn/query/bias': lead + ('heads', 'kv'),
        f'visual/{block}/attn/out/kernel': lead + ('heads', 'kv', 'embed'),
        f'visual/{block}/mlp/fc1/kernel': lead + ('embed', 'mlp'),
        f'visual/{block}/mlp/fc2/kernel': lead + ('mlp', 'embed'),
        f'visual/{block}/ln_1/scale': lead + ('embed',),
        f'textual/{block}/mlp/fc1/kernel': lead + ('embed', 'mlp'),
        'textual/token_embedding/embedding': ('vocab', 'embed'),
        'textual/text_projection': ('embed', 'proj'),
        'visual/conv1/kernel': ('patch', 'embed'),
        'visual/image_projection': ('embed', 'proj'),
        'visual/positional_embedding': (None, 'embed'),
        'logit_scale': (),
    }
    if mode == 'slowfast':
        expected.update({
            f'visual/{block}/adapter/down_proj/kernel': lead + ('embed', 'adapter'),
            f'visual/{block}/adapter/up_proj/kernel': lead + ('adapter', 'embed'),
            f'visual/{block}/adapter/gamma': lead + (None,),
            'slowfast_projection': ('fusion', 'proj'),
            f'visual/{block}/adapter/conv/kernel': lead + (None, 'adapter_in', 'adapter'),
        })
    else:
        assert not any(_is_adapter('/' + k) for k in by_name)
    for key, names in expected.items():
        assert by_name[key] == names, f'{key}: {by_name.get(key)} != {names}'


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


# ---------------------------------------------------------------------------------------------
# 8. Temporal table resizing == PyTorch bilinear, align_corners=False
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('source,target', [(4, 16), (16, 4), (4, 4), (16, 16), (4, 8), (8, 4),
                                           (4, 7), (3, 10), (10, 3), (1, 5), (5, 1)])
def test_temporal_resize_matches_torch(source, target):
    matrix = temporal_resize_matrix(source, target)
    assert matrix.shape == (target, source)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
    if source == target:
        np.testing.assert_array_equal(matrix, np.eye(source, dtype=np.float32))
    table = np.random.default_rng(source * 100 + target).standard_normal(
        (source, WIDTH)).astype(np.float32)
    expected = resize_temporal_table(torch.from_numpy(table), target).numpy()
    assert expected.shape == (target, WIDTH)
    np.testing.assert_allclose(matrix @ table, expected, atol=1e-6, rtol=1e-6)


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


# ---------------------------------------------------------------------------------------------
# 10. Input validation
# ---------------------------------------------------------------------------------------------

def test_wrong_image_size_raises(fresh):
    module = module_for('single')
    wrong = _video(4, size=48)
    with pytest.raises(ValueError, match=f'{SIZE}x{SIZE}'):
        module.apply({'params': fresh['single']}, wrong, method=EgoVideo.encode_video)


def test_slowfast_without_fast_raises(fresh):
    module = module_for('slowfast')
    with pytest.raises(ValueError, match='fast'):
        module.apply({'params': fresh['slowfast']}, SLOW, method=EgoVideo.encode_video)


def test_single_with_fast_raises(fresh):
    module = module_for('single')
    with pytest.raises(ValueError, match='single'):
        module.apply({'params': fresh['single']}, SLOW, FAST, method=EgoVideo.encode_video)


def test_unknown_variant_and_mode_raise():
    with pytest.raises(ValueError, match='no-such-variant') as info:
        get_model_config('no-such-variant', 'single')
    for name in VARIANTS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match='mode'):
        get_model_config('tiny', 'fastslow')


def test_tokens_longer_than_context_raise(fresh):
    module = module_for('single')
    length = TINY.text.context_length
    tokens = jnp.zeros((1, length + 1), jnp.int32)
    with pytest.raises(ValueError, match=str(length)):
        module.apply({'params': fresh['single']}, tokens, method=EgoVideo.encode_text)


# ---------------------------------------------------------------------------------------------
# Attention implementations give the same function
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('causal', [False, True])
def test_chunked_attention_matches_full_attention(causal):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 37, 3, 8)) for i in range(3))

    def loss(attend, q, k, v):
        return jnp.sum(attend(q, k, v) * jnp.cos(jnp.arange(8.0)))

    def full(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal)

    def chunked(q, k, v):  # 37 queries in chunks of 8: the last chunk is padded
        return chunked_attention(q, k, v, causal, chunk=8)

    assert _max_diff(full(q, k, v), chunked(q, k, v)) <= 1e-6
    grads_full = jax.grad(functools.partial(loss, full), argnums=(0, 1, 2))(q, k, v)
    grads_chunked = jax.grad(functools.partial(loss, chunked), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grads_full, grads_chunked):
        assert _max_diff(a, b) <= 1e-5


def test_chunked_model_matches_xla_model(params):
    p = params['slowfast']
    xla = EgoVideo(CFG['slowfast'], attention='xla')
    chunked = EgoVideo(CFG['slowfast'], attention='chunked')
    out_xla = xla.apply({'params': p}, SLOW, TOKENS, FAST)
    out_chunked = chunked.apply({'params': p}, SLOW, TOKENS, FAST)
    for key in ('video', 'text'):
        assert _max_diff(out_xla[key], out_chunked[key]) <= 1e-5, key


def test_auto_attention_chunks_long_sequences_on_cpu():
    assert resolve_attention('auto', 64) == 'xla'
    assert resolve_attention('auto', 3137) == ('chunked' if jax.default_backend() == 'cpu'
                                               else 'xla')
    assert resolve_attention('cudnn', 3137) == 'cudnn'
    with pytest.raises(ValueError, match='flash'):
        resolve_attention('flash', 64)
