"""Contrastive loss: hand-computed answers, and the sharded loss against the naive one on 1
and 8 simulated devices (the latter in its own process: XLA_FLAGS must be set before jax is
imported)."""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_SHARDED_VS_NAIVE = textwrap.dedent('''
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    from egovideo_jax.train.loss import naive_contrastive_loss, sharded_contrastive_loss


    def normalised(gen, shape):
        x = gen.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)


    def value_and_grads(loss_fn, video, text, scale):
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
        (loss, metrics), grads = jax.jit(grad_fn)(video, text, scale)
        return loss, metrics, grads


    def check(mesh, batch_axes=('data', 'fsdp'), batch=16, width=32, seed=0):
        gen = np.random.default_rng(seed)
        video, text = normalised(gen, (batch, width)), normalised(gen, (batch, width))
        # Near-duplicate pairs so the accuracies are neither 0 nor 1.
        text[: batch // 2] = video[: batch // 2] + 0.3 * text[: batch // 2]
        text /= np.linalg.norm(text, axis=-1, keepdims=True)
        scale = np.float32(1 / 0.07)
        sharded = functools.partial(sharded_contrastive_loss, mesh=mesh, batch_axes=batch_axes)
        loss, metrics, grads = value_and_grads(naive_contrastive_loss, video, text, scale)
        sharded_loss, sharded_metrics, sharded_grads = value_and_grads(sharded, video, text,
                                                                       scale)
        np.testing.assert_allclose(sharded_loss, loss, rtol=0, atol=1e-6)
        for key in ('loss', 'v2t_accuracy', 't2v_accuracy'):
            np.testing.assert_allclose(sharded_metrics[key], metrics[key], rtol=0, atol=1e-6)
        assert 0 < metrics['v2t_accuracy'] < 1, metrics
        for name, got, want in zip(('video', 'text', 'scale'), sharded_grads, grads):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
        return video, text, scale


    assert jax.device_count() == 8, jax.devices()
    axes = ('data', 'fsdp', 'tensor')
    for shape in ((8, 1, 1), (4, 2, 1), (2, 2, 2)):
        check(Mesh(np.array(jax.devices()).reshape(shape), axes))
    # Batch axes the mesh lacks ('fsdp') are left out.
    check(Mesh(np.array(jax.devices()), ('data',)))
    try:
        sharded_contrastive_loss(np.zeros((12, 4)), np.zeros((12, 4)), 1.0,
                                 Mesh(np.array(jax.devices()).reshape(8, 1, 1), axes))
    except ValueError as error:
        assert 'not divisible' in str(error), error
    else:
        raise AssertionError('a batch of 12 over 8 shards should be rejected')

    # Per-device memory: with 4 batch shards (tensor replicates) the compiled per-device
    # program of loss and gradients holds [4, 16] logit blocks and never a [16, 16] one.
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), axes)
    video, text, scale = check(mesh)
    sharded = functools.partial(sharded_contrastive_loss, mesh=mesh)
    for loss_fn, present, absent in ((sharded, 'f32[4,16]', 'f32[16,16]'),
                                     (naive_contrastive_loss, 'f32[16,16]', None)):
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
        hlo = grad_fn.lower(video, text, scale).compile().as_text()
        assert present in hlo, (present, hlo)
        assert absent is None or absent not in hlo, (absent, hlo)
    print('OK')
''')


def _normalised(gen, shape):
    x = gen.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_clip_loss(video, text, scale):
    """Independent float64 reference: mean of both cross-entropies with diagonal labels."""
    logits = scale * video.astype(np.float64) @ text.astype(np.float64).T

    def cross_entropy(rows):
        shifted = rows - rows.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -np.diag(log_probs).mean()

    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def _one_device_mesh():
    import jax
    from jax.sharding import Mesh
    return Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ('data', 'fsdp', 'tensor'))


@pytest.mark.parametrize('scale', [0.5, 2.0, 5.0])
def test_two_by_two_known_answer(scale):
    from egovideo_jax.train.loss import naive_contrastive_loss, sharded_contrastive_loss
    basis = np.eye(2, dtype=np.float32)
    # Matched pairs: logits s * I, so each row's CE is -log(e^s / (e^s + 1)) = log(1 + e^-s).
    # Swapped pairs: the matching logit is 0 and the other s, so CE = log(1 + e^s).
    cases = ((basis, math.log1p(math.exp(-scale)), 1.0),
             (basis[::-1], math.log1p(math.exp(scale)), 0.0))
    for loss_fn in (naive_contrastive_loss,
                    lambda v, t, s: sharded_contrastive_loss(v, t, s, _one_device_mesh())):
        for text, expected_loss, expected_accuracy in cases:
            loss, metrics = loss_fn(basis, text, np.float32(scale))
            np.testing.assert_allclose(loss, expected_loss, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(metrics['loss'], expected_loss, rtol=1e-6, atol=1e-6)
            assert float(metrics['v2t_accuracy']) == expected_accuracy
            assert float(metrics['t2v_accuracy']) == expected_accuracy


def test_naive_matches_numpy_reference(rng):
    from egovideo_jax.train.loss import naive_contrastive_loss
    video, text = _normalised(rng, (16, 32)), _normalised(rng, (16, 32))
    loss, _ = naive_contrastive_loss(video, text, np.float32(1 / 0.07))
    np.testing.assert_allclose(loss, _numpy_clip_loss(video, text, 1 / 0.07), rtol=1e-6)


def test_sharded_matches_naive_on_one_device(rng):
    import jax

    from egovideo_jax.train.loss import (
        contrastive_loss,
        naive_contrastive_loss,
        sharded_contrastive_loss,
    )
    video, text = _normalised(rng, (16, 32)), _normalised(rng, (16, 32))
    scale = np.float32(1 / 0.07)
    mesh = _one_device_mesh()

    def sharded(v, t, s):
        return sharded_contrastive_loss(v, t, s, mesh)

    def value_and_grads(loss_fn):
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        return jax.jit(grad_fn)(video, text, scale)

    (loss, metrics), grads = value_and_grads(naive_contrastive_loss)
    (sharded_loss, sharded_metrics), sharded_grads = value_and_grads(sharded)
    np.testing.assert_allclose(sharded_loss, loss, rtol=0, atol=1e-6)
    for key in metrics:
        np.testing.assert_allclose(sharded_metrics[key], metrics[key], rtol=0, atol=1e-6)
    for got, want in zip(sharded_grads, grads):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # A one-device mesh dispatches to the naive loss.
    dispatched, _ = contrastive_loss(video, text, scale, mesh=mesh)
    np.testing.assert_array_equal(dispatched, loss)


def test_sharded_needs_a_batch_axis_in_the_mesh(rng):
    import jax
    from jax.sharding import Mesh

    from egovideo_jax.train.loss import sharded_contrastive_loss
    mesh = Mesh(np.array(jax.devices()[:1]), ('tensor',))
    with pytest.raises(ValueError, match='none of the batch axes'):
        sharded_contrastive_loss(_normalised(rng, (4, 8)), _normalised(rng, (4, 8)), 1.0, mesh)


def test_sharded_matches_naive_on_8_simulated_devices():
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
               JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', _SHARDED_VS_NAIVE], env=env,
                            capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr
