"""Analytic model FLOPs (egovideo_jax/train/flops.py) against XLA's count and by hand.

XLA's `compiled.cost_analysis()` of an unrolled, remat-free train step counts every matmul
the analytic count has, plus element-wise work (norms, GELU, softmax, Adam) and the masked
half of the causal text attention; measured on CPU in float32, XLA/analytic is ~1.08 at the
demo size (stage1 1.078, stage2 1.080, joint 1.075) and ~1.02 at B/16 (joint, batch 2: 1.025).
"""
import functools
import importlib.util
import math
from pathlib import Path

import pytest

from egovideo_jax.model.config import get_model_config
from egovideo_jax.train.flops import (
    FlopCount,
    backward_flops,
    model_flops_from_config,
    model_flops_per_step,
    queried_param_paths,
    trainable_predicate,
)

ROOT = Path(__file__).resolve().parents[2]
# XLA counts at least every analytic matmul, and element-wise work on top (see above).
MAX_XLA_OVER_ANALYTIC = 1.10


def cotrain_config(arg: str, **model):
    spec = importlib.util.spec_from_file_location('cotrain_config', ROOT / 'configs' / 'cotrain.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    with config.unlocked():
        config.model.update(model)
    return config


def unrolled_config(arg: str, batch_size: int | None = None):
    """The config with unrolled layers, no remat, plain XLA attention, float32, one device."""
    config = cotrain_config(arg, scan_layers=False, remat_policy='none', attention='xla',
                            dtype='float32')
    with config.unlocked():
        config.mesh.data = 1
        if batch_size:
            config.data.batch_size = batch_size
    return config


@functools.lru_cache(maxsize=None)
def xla_step_flops(arg: str, batch_size: int | None = None) -> float:
    """cost_analysis() FLOPs of the train step of `unrolled_config(arg)`, built as the trainer
    and train/memory.py build it (train/setup.py: abstract state, compiled, never run)."""
    import jax

    from egovideo_jax.parallel import sharding
    from egovideo_jax.train.metrics import compiled_flops
    from egovideo_jax.train.setup import abstract_batch, make_setup

    config = unrolled_config(arg, batch_size)
    mesh = sharding.make_mesh(config.mesh, jax.local_devices()[:1])
    setup = make_setup(config, mesh, total_steps=100)
    batch = abstract_batch(config, setup.model_config, mesh)
    flops = compiled_flops(setup.step.lower(setup.abstract_state, batch).compile())
    assert flops, 'this backend reports no cost analysis'
    return flops


def assert_matches_xla(xla: float, analytic: float):
    ratio = xla / analytic
    assert 0.99 < ratio < MAX_XLA_OVER_ANALYTIC, (
        f'XLA {xla:.4g} vs analytic {analytic:.4g} FLOPs: ratio {ratio:.4f}')


@pytest.mark.parametrize('stage', ['stage1', 'stage2', 'joint'])
def test_demo_matches_xla(stage):
    config = unrolled_config(f'demo,{stage}')
    assert_matches_xla(xla_step_flops(f'demo,{stage}'), model_flops_from_config(config).total)


def test_stage2_step_skips_frozen_gradients():
    """stage2 trains only the adapters and projections: the step must not compute (and throw
    away) the frozen towers' gradients. It did while `grad_norm` took the norm of every
    gradient, which kept them alive: XLA counted ~1.43x the model FLOPs (demo: 3.36e10 vs
    2.35e10), about what it counts when everything trains."""
    config = unrolled_config('demo,stage2')
    everything = model_flops_per_step(get_model_config('demo', 'slowfast'),
                                      config.data.batch_size)
    assert model_flops_from_config(config).total < 0.8 * everything.total
    assert xla_step_flops('demo,stage2') < 0.85 * everything.total


@pytest.mark.slow  # B/16 unrolled compile: ~1-2 min on CPU
def test_b16_joint_matches_xla():
    config = unrolled_config('b16,joint', batch_size=2)
    assert_matches_xla(xla_step_flops('b16,joint', 2), model_flops_from_config(config).total)


@pytest.mark.parametrize('arg', ['b16,joint', 'b16,stage2', 'b16,stage1', 'l14_336,joint',
                                 'demo,stage2'])
def test_scan_layers_does_not_change_the_count(arg):
    scanned = model_flops_from_config(cotrain_config(arg, scan_layers=True))
    unrolled = model_flops_from_config(cotrain_config(arg, scan_layers=False))
    assert scanned == unrolled
    assert scanned.total > scanned.forward > 0


def test_tiny_single_by_hand():
    """'tiny', single branch: 4 frames of 32 px in 16 px patches (16 patch tokens + the
    class token: L = 17), width 64, MLP 128, 2 layers; text: 77 causal tokens, width 64,
    MLP 256, 2 layers; embed 32; batch 2. Forward matmul FLOPs by hand."""
    batch = 2
    patch_embed = 2 * 16 * (3 * 16 * 16) * 64            # [16 x 768] @ [768 x 64]
    vision_block = (4 * 2 * 17 * 64 * 64                 # q, k, v, out
                    + 4 * 17 * 17 * 64                   # QK^T and AV
                    + 2 * 2 * 17 * 64 * 128)             # fc1, fc2
    text_block = (4 * 2 * 77 * 64 * 64
                  + 4 * 77 * 77 * 64 // 2                # causal: half
                  + 2 * 2 * 77 * 64 * 256)
    projections = 2 * (2 * 64 * 32)                      # image and text
    per_clip = patch_embed + 2 * vision_block + 2 * text_block + projections
    assert per_clip == 20_613_888
    logits = 2 * batch * batch * 32
    forward = batch * per_clip + logits

    count = model_flops_per_step(get_model_config('tiny', 'single'), batch)
    assert isinstance(count, FlopCount)
    assert count.forward == forward == 41_228_032
    assert sum(count.forward_breakdown.values()) == count.forward
    assert sum(count.breakdown.values()) == count.total
    assert count.forward_breakdown['video/patch_embed'] == batch * patch_embed
    assert count.forward_breakdown['text/attention_core'] == batch * 2 * (2 * 77 * 77 * 64)
    # Everything trains: 3x forward, except that the pixels need no gradient (2x).
    assert count.total == 3 * forward - batch * patch_embed
    assert count.backward == count.total - count.forward


def ratio(count: FlopCount, component: str) -> float:
    return count.breakdown[component] / count.forward_breakdown[component]


@pytest.mark.parametrize('stage', ['stage2', 'joint'])
def test_backward_multipliers(stage):
    """The fast branch: pixels and block 0's attention/MLP need no gradient (1x), blocks
    1..N-1 pass gradients to the adapters below (2x; the attention core, whose two operands
    both carry gradients, 3x); adapters train (3x, but block 0's down_proj has no activation
    gradient to pass on)."""
    layers = 4
    count = model_flops_from_config(cotrain_config(f'demo,{stage}'))
    assert ratio(count, 'fast/patch_embed') == 1
    for part in ('attention_proj', 'mlp'):
        assert math.isclose(ratio(count, f'fast/{part}'), (1 + 2 * (layers - 1)) / layers)
    assert math.isclose(ratio(count, 'fast/attention_core'), (1 + 3 * (layers - 1)) / layers)
    assert 2.85 < ratio(count, 'fast/adapter') < 3
    assert ratio(count, 'fast/projection') == 2  # frozen weight, live input
    assert ratio(count, 'fusion') == 3 and ratio(count, 'logits') == 3
    if stage == 'joint':
        assert ratio(count, 'slow/patch_embed') == 2
        for part in ('slow/attention_proj', 'slow/attention_core', 'slow/mlp',
                     'slow/projection', 'text/mlp', 'text/projection'):
            assert ratio(count, part) == 3, part
    else:  # only the projections train: nothing below them needs a gradient
        for part in ('slow/patch_embed', 'slow/attention_proj', 'slow/attention_core',
                     'slow/mlp', 'text/attention_proj', 'text/attention_core', 'text/mlp'):
            assert ratio(count, part) == 1, part
        assert ratio(count, 'slow/projection') == ratio(count, 'text/projection') == 2
    assert count.forward == model_flops_from_config(cotrain_config('demo,joint')).forward


def test_backward_rule():
    assert backward_flops(10, (True, True)) == 20
    assert backward_flops(10, (False, True)) == backward_flops(10, (True, False)) == 10
    assert backward_flops(10, (False, False)) == 0


def test_trainable_forms_agree():
    """A predicate, config.optim and None (everything) are the same argument."""
    model_config = get_model_config('tiny', 'slowfast')
    optim = cotrain_config('demo,joint').optim  # trains everything but the logit scale
    assert (model_flops_per_step(model_config, 4, optim)
            == model_flops_per_step(model_config, 4, lambda path: True)
            == model_flops_per_step(model_config, 4))
    frozen_adapters = model_flops_per_step(
        model_config, 4, lambda path: '/adapter/' not in path)
    assert frozen_adapters.breakdown['fast/adapter'] == frozen_adapters.forward_breakdown[
        'fast/adapter']  # nothing in the fast branch trains: forward only
    stage2 = cotrain_config('demo,stage2').optim
    predicate = trainable_predicate(stage2)
    assert predicate('visual/blocks_2/adapter/up_proj/kernel')
    assert predicate('visual/blocks/adapter/up_proj/kernel')
    assert not predicate('visual/blocks_2/attn/query/kernel')
    assert not predicate('logit_scale')


def test_grad_accumulation_changes_only_the_logits():
    model_config = get_model_config('demo', 'slowfast')
    one = model_flops_per_step(model_config, 16)
    four = model_flops_per_step(model_config, 16, grad_accum_steps=4)
    assert four.breakdown['logits'] == one.breakdown['logits'] / 4
    assert ({k: v for k, v in four.breakdown.items() if k != 'logits'}
            == {k: v for k, v in one.breakdown.items() if k != 'logits'})
    with pytest.raises(ValueError):
        model_flops_per_step(model_config, 10, grad_accum_steps=4)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_queried_paths_are_real_parameters(scan_layers):
    """Every parameter the count asks about exists in the model, so a rename cannot silently
    make it "frozen"; and every matmul weight of the model is asked about."""
    import flax.linen as nn

    from egovideo_jax.model.egovideo import EgoVideo
    from egovideo_jax.train.optimizer import param_paths
    from egovideo_jax.train.state import abstract_params

    model_config = get_model_config('tiny', 'slowfast')
    real = set(param_paths(nn.unbox(abstract_params(
        EgoVideo(model_config, scan_layers=scan_layers), model_config))))
    queried = queried_param_paths(model_config, scan_layers)
    assert queried <= real, sorted(queried - real)
    assert real - queried == {'logit_scale'}  # multiplies the logits, element-wise
