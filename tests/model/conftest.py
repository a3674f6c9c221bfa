"""Parameters shared by the model tests (package scope: initialised once for tests/model)."""

import flax.linen as nn
import pytest
from flax import traverse_util

from egovideo_jax.model.encoder import init_params
from tests.helpers.params import perturbed
from tests.helpers.tiny_model import CFG, _flat, _without_fast_branch, abstract_variables


@pytest.fixture(scope='package')
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


@pytest.fixture(scope='package')
def params(fresh):
    """Every leaf moved off its init (non-zero up_proj, temporal table, ...)."""
    return {mode: perturbed(p, seed=1, scale=0.05) for mode, p in fresh.items()}
