"""EgoVideo model tests on the 'tiny' variant: output shapes and norms, scanned vs unrolled
layers, rematerialisation, bf16 compute, logical-axis annotations, temporal-table resizing
against PyTorch, input validation.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from egovideo_jax.model import VARIANTS, EgoVideo, get_model_config
from egovideo_jax.model.egovideo import dummy_inputs
from egovideo_jax.model.layout import stack_layers, unstack_layers
from egovideo_jax.model.vit import temporal_resize_matrix
from tests.helpers.tiny_model import (
    CFG,
    EMBED,
    FAST,
    LAYERS,
    SIZE,
    SLOW,
    TINY,
    WIDTH,
    _assert_trees_close,
    _flat,
    _is_adapter,
    _max_diff,
    _video,
    abstract_variables,
    forward,
    loss_and_grad,
    module_for,
)
from tests.helpers.torch_reference import resize_temporal_table

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
