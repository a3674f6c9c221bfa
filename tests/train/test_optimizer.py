"""`make_optimizer`: trainable subsets, the decay mask, lr multipliers, rule checking and the
learning-rate schedules, on the tiny model's real parameter tree."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.train.optimizer import (
    check_patterns,
    learning_rate_schedule,
    make_optimizer,
    param_paths,
    trainable_mask,
)
from egovideo_jax.train.state import abstract_params
from tests.helpers.train_fixtures import get_config

BASE_LR = 1e-3


@pytest.fixture(scope='module')
def params():
    """The tiny slow/fast model's parameter tree with random float32 values."""
    config = get_model_config('tiny', 'slowfast')
    shapes = nn.unbox(abstract_params(EgoVideo(config), config))
    gen = np.random.default_rng(0)
    return jax.tree_util.tree_map(
        lambda s: gen.standard_normal(s.shape).astype(np.float32), shapes)


def optim_config(stage='joint', **overrides) -> ConfigDict:
    """config.optim of the demo config for `stage`, plus total_steps (as the trainer adds)."""
    optim = get_config(f'demo,{stage}').optim.to_dict()
    optim.update(total_steps=100, lr=BASE_LR, warmup_steps=0)
    optim.update(overrides)
    return ConfigDict(optim)


def random_like(params, seed=1, scale=1.0):
    gen = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (scale * gen.standard_normal(x.shape)).astype(np.float32), params)


def zeros_like(params):
    return jax.tree_util.tree_map(np.zeros_like, params)


def first_update(params, optim, grads):
    tx, schedule = make_optimizer(params, optim)
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    return param_paths(jax.device_get(updates)), schedule


def is_stage2_trainable(path):
    return '/adapter/' in path or path in (
        'visual/image_projection', 'textual/text_projection', 'slowfast_projection')


# ----------------------------------------------------------------------------- trainable

def test_stage2_trains_adapters_and_projections_only(params):
    mask = param_paths(trainable_mask(params, optim_config('stage2').trainable,
                                      optim_config('stage2').frozen))
    assert {p for p, on in mask.items() if on} == {p for p in mask if is_stage2_trainable(p)}
    assert any('/adapter/' in p for p in mask) and not mask['visual/blocks_0/attn/query/kernel']
    assert not mask['logit_scale'] and not mask['textual/token_embedding/embedding']


def test_frozen_parameters_get_no_optimizer_state(params):
    tx, _ = make_optimizer(params, optim_config('stage2'))
    state = tx.init(params)
    paths = param_paths(params)
    trainable = [p for p in paths if is_stage2_trainable(p)]
    assert 0 < len(trainable) < len(paths)
    # Adam's mu and nu for each trainable parameter, nothing per frozen one; the only other
    # leaves are scalar step counts.
    leaves = jax.tree_util.tree_leaves(state)
    moments = [leaf for leaf in leaves if np.ndim(leaf) > 0]
    assert len(moments) == 2 * len(trainable)
    assert sum(np.size(m) for m in moments) == 2 * sum(paths[p].size for p in trainable)
    counts = [leaf for leaf in leaves if np.ndim(leaf) == 0]
    assert counts and all(np.issubdtype(np.asarray(c).dtype, np.integer) for c in counts)
    # The full model with the default rules: every parameter but the frozen logit scale.
    joint = make_optimizer(params, optim_config('joint'))[0].init(params)
    joint_moments = [leaf for leaf in jax.tree_util.tree_leaves(joint) if np.ndim(leaf) > 0]
    assert len(joint_moments) == 2 * (len(paths) - 1)  # logit_scale (a scalar) is frozen


def test_update_moves_trainable_parameters_and_leaves_frozen_ones(params):
    grads = random_like(params)
    updates, _ = first_update(params, optim_config('stage2'), grads)
    before = param_paths(params)
    after = jax.device_get(optax.apply_updates(before, updates))  # same {path: array} keys
    for path, update in updates.items():
        if is_stage2_trainable(path):
            assert np.all(update != 0), path
            assert not np.array_equal(after[path], before[path]), path
        else:
            assert not np.any(update), path
            assert np.asarray(after[path]).tobytes() == before[path].tobytes(), path


def test_frozen_gradients_do_not_count_in_gradient_clipping(params):
    optim = optim_config('stage2', grad_clip=1.0)
    grads = random_like(params)
    huge_frozen = {p: g if is_stage2_trainable(p) else g * 1e6
                   for p, g in param_paths(grads).items()}
    huge = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                        [huge_frozen[p] for p in param_paths(params)])
    plain, _ = first_update(params, optim, grads)
    with_huge, _ = first_update(params, optim, huge)
    for path in plain:
        assert plain[path].tobytes() == with_huge[path].tobytes(), path


# ----------------------------------------------------------------------------- decay

def expected_no_decay(path):
    name = path.split('/')[-1]
    return (name in ('bias', 'scale', 'gamma', 'logit_scale') or 'embedding' in path)


def test_weight_decay_skips_biases_norms_embeddings_logit_scale_and_gamma(params):
    lr, decay = 0.1, 0.5
    optim = optim_config('joint', lr=lr, weight_decay=decay, frozen=[])
    # Zero gradients: Adam's step is 0, so the update is the decoupled decay alone.
    updates, schedule = first_update(params, optim, zeros_like(params))
    assert float(schedule(0)) == pytest.approx(lr)
    values = param_paths(params)
    kinds = {'decayed': 0, 'kept': 0}
    for path, update in updates.items():
        if expected_no_decay(path):
            assert not np.any(update), path
            kinds['kept'] += 1
        else:
            np.testing.assert_allclose(update, -lr * decay * values[path], rtol=1e-6,
                                       err_msg=path)
            kinds['decayed'] += 1
    assert kinds['decayed'] > 10 and kinds['kept'] > 10
    for name in ('logit_scale', 'visual/blocks_0/adapter/gamma', 'visual/class_embedding',
                 'textual/token_embedding/embedding', 'visual/ln_pre/scale'):
        assert not np.any(updates[name]), name
    for name in ('visual/conv1/kernel', 'visual/image_projection', 'slowfast_projection'):
        assert np.all(updates[name] != 0), name


# ----------------------------------------------------------------------------- lr multipliers

def test_lr_multipliers_scale_the_update_first_match_wins(params):
    grads = random_like(params)
    plain, _ = first_update(params, optim_config('joint', weight_decay=0.0), grads)
    scaled, _ = first_update(params, optim_config(
        'joint', weight_decay=0.0,
        lr_multipliers=[('textual/blocks_0/.*', 0.5), ('textual/.*', 0.1)]), grads)
    for path in plain:
        factor = (0.5 if path.startswith('textual/blocks_0/') else
                  0.1 if path.startswith('textual/') else 1.0)
        if factor == 1.0:
            assert scaled[path].tobytes() == plain[path].tobytes(), path
        else:
            np.testing.assert_allclose(scaled[path], factor * plain[path], rtol=1e-6,
                                       err_msg=path)
    # Adam's first step is about lr * sign(gradient): the multiplier scales the schedule.
    np.testing.assert_allclose(np.abs(scaled['textual/text_projection']), 0.1 * BASE_LR,
                               rtol=1e-3)


def test_lr_multiplier_follows_the_schedule_over_steps(params):
    optim = optim_config('stage2', weight_decay=0.0, warmup_steps=4,
                         lr_multipliers=[('visual/image_projection', 2.0)])
    tx, schedule = make_optimizer(params, optim)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(np.ones_like, params)  # constant gradient: Adam step = 1
    for step in range(6):
        updates, state = tx.update(grads, state, params)
        updates = param_paths(updates)
        np.testing.assert_allclose(updates['visual/image_projection'],
                                   -2.0 * float(schedule(step)), rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(updates['textual/text_projection'],
                                   -1.0 * float(schedule(step)), rtol=1e-4, atol=1e-12)


# ----------------------------------------------------------------------------- rule checking

@pytest.mark.parametrize('field', ['trainable', 'frozen', 'no_decay', 'lr_multipliers'])
def test_a_rule_that_matches_nothing_is_an_error_naming_field_and_rule(params, field):
    optim = optim_config('joint')
    rule = 'visual/blocks_0/atn/.*'  # a typo
    optim[field] = list(optim[field]) + [(rule, 0.1) if field == 'lr_multipliers' else rule]
    with pytest.raises(ValueError, match=re.escape(f'config.optim.{field}: rule {rule!r}')):
        make_optimizer(params, optim)


def test_rules_must_match_whole_paths(params):
    with pytest.raises(ValueError, match=r"config\.optim\.trainable: rule 'visual'"):
        check_patterns(params, trainable=['visual'])
    check_patterns(params, trainable=['visual/.*'])  # fine


# ----------------------------------------------------------------------------- schedules

def test_cosine_schedule_known_values():
    schedule = learning_rate_schedule(1.0, total_steps=110, warmup_steps=10)
    for step, value in {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.5 * (1 + np.cos(np.pi / 4)),
                        60: 0.5, 110: 0.0, 500: 0.0}.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), step
    floor = learning_rate_schedule(2.0, total_steps=110, warmup_steps=10, end_lr=0.2)
    assert float(floor(60)) == pytest.approx(1.1, abs=1e-6)
    assert float(floor(110)) == pytest.approx(0.2, abs=1e-6)
    # LaViLa's MIR recipe: the warm-up starts from warmup_start_lr, not 0.
    warm = learning_rate_schedule(3e-5, 100, 10, warmup_start_lr=1e-6, end_lr=1e-5)
    assert float(warm(0)) == pytest.approx(1e-6, rel=1e-5)
    assert float(warm(5)) == pytest.approx((1e-6 + 3e-5) / 2, rel=1e-5)
    assert float(warm(100)) == pytest.approx(1e-5, rel=1e-5)


def test_sgd_matches_torch_sgd_with_momentum_and_coupled_weight_decay():
    import torch
    optim = ConfigDict(dict(
        optimizer='sgd', lr=0.1, momentum=0.9, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8,
        warmup_steps=0, total_steps=1000, schedule='constant', grad_clip=0.0,
        trainable=('.*',), frozen=(), lr_multipliers=(), no_decay=('b',)))
    params = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array([0.5])}
    grads = [{'w': jnp.array([0.3, 0.1]), 'b': jnp.array([-0.2])},
             {'w': jnp.array([-0.1, 0.4]), 'b': jnp.array([0.3])}]
    tx, _ = make_optimizer(params, optim)
    state = tx.init(params)
    for grad in grads:
        updates, state = tx.update(grad, state, params)
        params = optax.apply_updates(params, updates)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([0.5], requires_grad=True)
    reference = torch.optim.SGD([{'params': [w], 'weight_decay': 0.01},
                                 {'params': [b], 'weight_decay': 0.0}], lr=0.1, momentum=0.9)
    for grad in grads:
        w.grad, b.grad = torch.tensor(np.asarray(grad['w'])), torch.tensor(np.asarray(grad['b']))
        reference.step()
    np.testing.assert_allclose(params['w'], w.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(params['b'], b.detach().numpy(), rtol=1e-6)


def test_unknown_optimizer_names_the_field():
    optim = ConfigDict(dict(
        optimizer='lion', lr=0.1, weight_decay=0.0, warmup_steps=0, total_steps=10,
        schedule='constant', grad_clip=0.0, trainable=('.*',), frozen=(), lr_multipliers=(),
        no_decay=()))
    with pytest.raises(ValueError, match=r"config\.optim\.optimizer: unknown 'lion'"):
        make_optimizer({'w': jnp.zeros(2)}, optim)


def test_constant_schedule_known_values():
    schedule = learning_rate_schedule(4e-5, total_steps=100, warmup_steps=8,
                                      schedule='constant')
    for step, value in {0: 0.0, 2: 1e-5, 8: 4e-5, 50: 4e-5, 1000: 4e-5}.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-6, abs=1e-12), step
    no_warmup = learning_rate_schedule(4e-5, 100, 0, 'constant')
    assert float(no_warmup(0)) == pytest.approx(4e-5)


def test_unknown_schedule_names_the_field():
    with pytest.raises(ValueError, match=r"config\.optim\.schedule: unknown 'linear'"):
        learning_rate_schedule(1.0, 100, 10, 'linear')
