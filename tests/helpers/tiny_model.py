"""The tiny EgoVideo the model tests share: configs, inputs, tree comparisons and jit-compiled
forward / gradient functions, each built once per configuration (`functools.lru_cache`) so the
model tests compile each variant once per session."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from egovideo_jax.model import EgoVideo, get_model_config
from egovideo_jax.model.egovideo import dummy_inputs

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



def _without_fast_branch(tree):
    """Slowfast parameters minus the adapters and the fusion: the single-branch layout."""
    flat = traverse_util.flatten_dict(dict(tree), sep='/')
    return traverse_util.unflatten_dict(
        {k: v for k, v in flat.items() if not _is_adapter(k) and k != 'slowfast_projection'},
        sep='/')


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
