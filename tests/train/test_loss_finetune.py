"""Fine-tuning losses: the max-margin ranking loss (LaViLa / AVION, EgoVLP's adaptive margin)
against independent PyTorch references and a hand-computed case, sharded against naive on 8
simulated devices (in its own process: XLA_FLAGS must be set before jax is imported); the
summed cross-entropy of the classification heads against torch's; the verb / noun
marginalisation of action scores."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.train_fixtures import REPO, simulated_devices_env


def _normalised(gen, shape):
    x = gen.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _paired(gen, batch=16, width=32):
    """Normalised video / text with near-duplicate pairs in the first half (accuracies
    strictly between 0 and 1, hinge terms both active and inactive)."""
    video, text = _normalised(gen, (batch, width)), _normalised(gen, (batch, width))
    text[: batch // 2] = video[: batch // 2] + 0.5 * text[: batch // 2]
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    return video, text


# ----------------------------------------------------------------------------- torch references

class MaxMarginRankingLoss(torch.nn.Module):
    """LaViLa's `MaxMarginRankingLoss` (lavila/models/loss.py, AVION's copy), fix_norm=True,
    rewritten from its definition: x = sim(text, video) of the gathered batch."""

    def __init__(self, margin=0.2, fix_norm=True):
        super().__init__()
        self.margin, self.fix_norm = margin, fix_norm

    def forward(self, x):
        n = x.size(0)
        x1 = torch.diag(x).unsqueeze(1).expand(n, n).contiguous().view(-1, 1)
        x1 = torch.cat((x1, x1), 0)
        x2 = torch.cat((x.view(-1, 1), x.transpose(0, 1).contiguous().view(-1, 1)), 0)
        max_margin = F.relu(self.margin - (x1 - x2))
        if self.fix_norm:
            keep = torch.ones(x.shape, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
            keep1 = keep.view(-1, 1)
            keep2 = keep.transpose(0, 1).contiguous().view(-1, 1)
            keep_idx = torch.nonzero(torch.cat((keep1, keep2), 0).flatten()).flatten()
            x1_ = torch.index_select(x1, 0, keep_idx)
            x2_ = torch.index_select(x2, 0, keep_idx)
            max_margin = F.relu(self.margin - (x1_ - x2_))
        return max_margin.mean()


class AdaptiveMaxMarginRankingLoss(torch.nn.Module):
    """EgoVLP's `AdaptiveMaxMarginRankingLoss` (model/loss.py), fix_norm=True: the margin of
    row i's terms scaled by weight_i."""

    def __init__(self, margin=0.4, fix_norm=True):
        super().__init__()
        self.margin, self.fix_norm = margin, fix_norm

    def forward(self, x, weight):
        n = x.size(0)
        x1 = torch.diag(x).unsqueeze(1).expand(n, n).contiguous().view(-1, 1)
        x1 = torch.cat((x1, x1), 0)
        w1 = weight.unsqueeze(1).expand(n, n).contiguous().view(-1, 1)
        w1 = torch.cat((w1, w1), 0)
        x2 = torch.cat((x.view(-1, 1), x.transpose(0, 1).contiguous().view(-1, 1)), 0)
        max_margin = F.relu(w1 * self.margin - (x1 - x2))
        if self.fix_norm:
            keep = torch.ones(x.shape, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
            keep1 = keep.view(-1, 1)
            keep2 = keep.transpose(0, 1).contiguous().view(-1, 1)
            keep_idx = torch.nonzero(torch.cat((keep1, keep2), 0).flatten()).flatten()
            x1_ = torch.index_select(x1, 0, keep_idx)
            w1_ = torch.index_select(w1, 0, keep_idx)
            x2_ = torch.index_select(x2, 0, keep_idx)
            max_margin = F.relu(w1_ * self.margin - (x1_ - x2_))
        return max_margin.mean()


def _torch_loss_and_grads(video, text, margin, weights=None):
    v = torch.tensor(video, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(text, dtype=torch.float64, requires_grad=True)
    x = t @ v.T  # LaViLa: sim_matrix(text, video)
    if weights is None:
        loss = MaxMarginRankingLoss(margin)(x)
    else:
        loss = AdaptiveMaxMarginRankingLoss(margin)(x, torch.tensor(weights, dtype=torch.float64))
    loss.backward()
    return loss.item(), v.grad.numpy(), t.grad.numpy()


# ----------------------------------------------------------------------------- max-margin

def test_max_margin_two_by_two_known_answer():
    from egovideo_jax.train.loss import max_margin_loss, naive_max_margin_loss
    # video 0 = e0, video 1 = e1; text 0 = e0, text 1 = (0.6, 0.8): s = [[1, .6], [0, .8]].
    video = np.array([[1, 0], [0, 1]], np.float32)
    text = np.array([[1, 0], [0.6, 0.8]], np.float32)
    # v2t: row 0: relu(.2 - (1 - .6)) = 0; row 1: relu(.2 - (.8 - 0)) = 0.
    # t2v: row 0: relu(.2 - (1 - 0)) = 0; row 1: relu(.2 - (.8 - .6)) = 0 (boundary).
    # margin 0.5: v2t 0.1 + 0, t2v 0 + 0.3, mean over 4 terms = 0.1.
    loss, metrics = naive_max_margin_loss(video, text, margin=0.5)
    np.testing.assert_allclose(loss, 0.1, atol=1e-6)
    assert float(metrics['v2t_accuracy']) == 1.0 and float(metrics['t2v_accuracy']) == 1.0
    # Swapped texts: s = [[.6, 1], [.8, 0]]; margin 0.2: v2t relu(.2 - (.6 - 1)) = .6 and
    # relu(.2 - (0 - .8)) = 1; t2v relu(.2 - (.6 - .8)) = .4, relu(.2 - (0 - 1)) = 1.2.
    # Every video's best text is the other one and so is every text's best video.
    loss, metrics = max_margin_loss(video, text[::-1].copy())
    np.testing.assert_allclose(loss, (0.6 + 1.0 + 0.4 + 1.2) / 4, atol=1e-6)
    assert float(metrics['v2t_accuracy']) == 0.0 and float(metrics['t2v_accuracy']) == 0.0
    # Adaptive: weights (1, 0.5) at margin 0.4: row 0 margin .4, row 1 margin .2, s as the
    # first case: v2t relu(.4 - .4) = 0, relu(.2 - .8) = 0; t2v relu(.4 - 1) = 0,
    # relu(.2 - .2) = 0; weights (2, 2) -> margin .8: v2t .4 + 0, t2v 0 + .6 -> 1.0 / 4.
    loss, _ = max_margin_loss(video, text, margin=0.4, weights=np.array([1.0, 0.5]))
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    loss, _ = max_margin_loss(video, text, margin=0.4, weights=np.array([2.0, 2.0]))
    np.testing.assert_allclose(loss, 0.25, atol=1e-6)


@pytest.mark.parametrize('adaptive', [False, True])
def test_max_margin_matches_torch_reference(rng, adaptive):
    import jax

    from egovideo_jax.train.loss import max_margin_loss
    video, text = _paired(rng)
    margin = 0.4 if adaptive else 0.2
    weights = rng.uniform(0.1, 1.0, len(video)).astype(np.float32) if adaptive else None
    want, want_video_grad, want_text_grad = _torch_loss_and_grads(video, text, margin, weights)

    def loss_fn(v, t):
        return max_margin_loss(v, t, margin=margin, weights=weights)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                        has_aux=True))(video, text)
    assert want > 0.01
    np.testing.assert_allclose(loss, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(metrics['loss'], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grads[0], want_video_grad, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grads[1], want_text_grad, rtol=0, atol=1e-6)
    similarity = video.astype(np.float64) @ text.astype(np.float64).T
    diagonal = np.arange(len(video))
    np.testing.assert_allclose(metrics['v2t_accuracy'],
                               np.mean(similarity.argmax(1) == diagonal))
    np.testing.assert_allclose(metrics['t2v_accuracy'],
                               np.mean(similarity.argmax(0) == diagonal))
    assert 0 < float(metrics['v2t_accuracy']) < 1


def test_max_margin_rejects_weights_of_the_wrong_shape(rng):
    from egovideo_jax.train.loss import max_margin_loss
    video, text = _paired(rng, batch=4)
    with pytest.raises(ValueError, match=r'weights must be \[batch\]'):
        max_margin_loss(video, text, weights=np.ones((4, 1)))


def test_max_margin_one_device_mesh_dispatches_to_naive(rng):
    import jax
    from jax.sharding import Mesh

    from egovideo_jax.train.loss import (
        max_margin_loss,
        naive_max_margin_loss,
        sharded_max_margin_loss,
    )
    video, text = _paired(rng)
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ('data', 'fsdp', 'tensor'))
    naive, _ = naive_max_margin_loss(video, text)
    np.testing.assert_array_equal(max_margin_loss(video, text, mesh)[0], naive)
    np.testing.assert_allclose(sharded_max_margin_loss(video, text, mesh)[0], naive, atol=1e-6)


_SHARDED_VS_NAIVE = textwrap.dedent('''
    import functools

    import jax
    import numpy as np
    from jax.sharding import Mesh

    from egovideo_jax.train.loss import (
        max_margin_loss,
        naive_max_margin_loss,
        sharded_max_margin_loss,
    )


    def value_and_grads(loss_fn, video, text):
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (loss, metrics), grads = jax.jit(grad_fn)(video, text)
        return loss, metrics, grads


    def check(mesh, video, text, weights, batch_axes=('data', 'fsdp')):
        margin = 0.2 if weights is None else 0.4
        naive = functools.partial(naive_max_margin_loss, margin=margin, weights=weights)
        sharded = functools.partial(sharded_max_margin_loss, mesh=mesh, margin=margin,
                                    weights=weights, batch_axes=batch_axes)
        loss, metrics, grads = value_and_grads(naive, video, text)
        got_loss, got_metrics, got_grads = value_and_grads(sharded, video, text)
        assert float(loss) > 0.01, loss
        np.testing.assert_allclose(got_loss, loss, rtol=0, atol=1e-6)
        for key in ('loss', 'v2t_accuracy', 't2v_accuracy'):
            np.testing.assert_allclose(got_metrics[key], metrics[key], rtol=0, atol=1e-6)
        assert 0 < metrics['v2t_accuracy'] < 1, metrics
        for name, got, want in zip(('video', 'text'), got_grads, grads):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
        dispatched, _ = max_margin_loss(video, text, mesh, margin=margin, weights=weights,
                                        batch_axes=batch_axes)
        np.testing.assert_allclose(dispatched, loss, rtol=0, atol=1e-6)


    assert jax.device_count() == 8, jax.devices()
    gen = np.random.default_rng(0)
    video = gen.standard_normal((16, 32)).astype(np.float32)
    text = gen.standard_normal((16, 32)).astype(np.float32)
    text[:8] = video[:8] + 0.5 * text[:8]
    video /= np.linalg.norm(video, axis=-1, keepdims=True)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    weights = gen.uniform(0.1, 1.0, 16).astype(np.float32)
    axes = ('data', 'fsdp', 'tensor')
    for shape in ((8, 1, 1), (4, 2, 1), (2, 2, 2)):
        mesh = Mesh(np.array(jax.devices()).reshape(shape), axes)
        for w in (None, weights):
            check(mesh, video, text, w)
    check(Mesh(np.array(jax.devices()), ('data',)), video, text, weights)

    # Per-device memory: 4 batch shards hold [4, 16] similarity blocks, never [16, 16].
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), axes)
    sharded = functools.partial(sharded_max_margin_loss, mesh=mesh, weights=weights)
    for loss_fn, present, absent in ((sharded, 'f32[4,16]', 'f32[16,16]'),
                                     (naive_max_margin_loss, 'f32[16,16]', None)):
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
        hlo = grad_fn.lower(video, text).compile().as_text()
        assert present in hlo, (present, hlo)
        assert absent is None or absent not in hlo, (absent, hlo)
    print('OK')
''')


def test_max_margin_sharded_matches_naive_on_8_simulated_devices():
    result = subprocess.run([sys.executable, '-c', _SHARDED_VS_NAIVE],
                            env=simulated_devices_env(8), capture_output=True, text=True,
                            timeout=180, cwd=REPO)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr


# ----------------------------------------------------------------------------- classification

def _torch_cross_entropy(logits, target, smoothing):
    target = torch.tensor(target)
    kwargs = dict(label_smoothing=smoothing)
    if target.ndim == 1:
        kwargs['ignore_index'] = -1
    return F.cross_entropy(torch.tensor(logits, dtype=torch.float64),
                           target.double() if target.ndim == 2 else target, **kwargs).item()


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_classification_loss_sums_heads_and_matches_torch(rng, smoothing):
    from egovideo_jax.train.loss import classification_loss
    sizes = {'verb': 7, 'noun': 11, 'action': 13}
    logits = {h: rng.standard_normal((6, c)).astype(np.float32) * 3 for h, c in sizes.items()}
    targets = {'verb': np.array([0, 3, 6, 2, 2, 1]),
               'noun': np.array([4, -1, 10, 0, -1, 7]),  # two rows without a noun
               'action': rng.dirichlet(np.ones(13), 6).astype(np.float32)}  # soft
    loss, metrics = classification_loss(logits, targets, label_smoothing=smoothing)
    per_head = {h: _torch_cross_entropy(logits[h], targets[h], smoothing) for h in sizes}
    for head, want in per_head.items():
        np.testing.assert_allclose(metrics[f'{head}_loss'], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss, sum(per_head.values()), rtol=1e-6)
    assert float(metrics['loss']) == float(loss)
    labelled = targets['noun'] >= 0
    np.testing.assert_allclose(metrics['noun_top1'], np.mean(
        logits['noun'].argmax(1)[labelled] == targets['noun'][labelled]))
    np.testing.assert_allclose(metrics['verb_top1'],
                               np.mean(logits['verb'].argmax(1) == targets['verb']))
    np.testing.assert_allclose(metrics['action_top1'], np.mean(
        logits['action'].argmax(1) == targets['action'].argmax(1)))


def test_classification_loss_known_answer_and_unlabelled_head():
    from egovideo_jax.train.loss import classification_loss
    # Two classes, equal logits: CE = log 2 whatever the label or smoothing.
    loss, metrics = classification_loss({'a': np.zeros((2, 2), np.float32)},
                                         {'a': np.array([0, 1])}, label_smoothing=0.1)
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-6)
    # Logits (log 3, 0): p = (3/4, 1/4); label 0 with smoothing 0.2 -> target (.9, .1).
    logits = np.array([[np.log(3), 0.0]], np.float32)
    loss, metrics = classification_loss({'a': logits}, {'a': np.array([0])}, 0.2)
    np.testing.assert_allclose(loss, -(0.9 * np.log(0.75) + 0.1 * np.log(0.25)), rtol=1e-6)
    assert float(metrics['a_top1']) == 1.0
    # A head with no label in the batch contributes 0 (not NaN).
    loss, metrics = classification_loss({'a': logits, 'b': logits},
                                         {'a': np.array([0]), 'b': np.array([-1])})
    np.testing.assert_allclose(metrics['b_loss'], 0.0)
    np.testing.assert_allclose(loss, -np.log(0.75), rtol=1e-6)
    with pytest.raises(ValueError, match='heads'):
        classification_loss({'a': logits}, {'b': np.array([0])})


def test_classification_loss_gradient_is_softmax_minus_target(rng):
    import jax

    from egovideo_jax.train.loss import classification_loss
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    labels = np.array([1, 0, -1, 4])
    grad = jax.grad(lambda x: classification_loss({'h': x}, {'h': labels})[0])(logits)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = probs - np.eye(5)[labels]
    want[2] = 0  # unlabelled row
    np.testing.assert_allclose(grad, want / 3, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- marginalisation

def test_marginal_log_probs_sums_action_probabilities_per_part(rng):
    from egovideo_jax.train.loss import marginal_log_probs
    action_to_verb = np.array([0, 0, 2, 1, 2, 2, 0])
    logits = rng.standard_normal((3, 7)).astype(np.float32)
    got = np.asarray(marginal_log_probs(logits, action_to_verb, num_parts=4))
    probs = np.exp(logits.astype(np.float64))
    probs /= probs.sum(1, keepdims=True)
    want = np.stack([probs[:, action_to_verb == v].sum(1) for v in range(3)], 1)
    np.testing.assert_allclose(np.exp(got[:, :3]), want, rtol=1e-6)
    assert np.all(np.isneginf(got[:, 3]))  # verb 3: no action
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, rtol=1e-6)


def test_marginal_log_probs_is_stable_for_large_logits():
    import jax

    from egovideo_jax.train.loss import marginal_log_probs
    logits = np.array([[1e4, 1e4 - 1, -1e4, 0.0]], np.float32)
    got = np.asarray(marginal_log_probs(logits, np.array([0, 1, 1, 1]), 2))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0], [-np.log1p(np.exp(-1)), -np.log1p(np.exp(1))],
                               rtol=1e-5)
    grad = jax.grad(lambda x: marginal_log_probs(x, np.array([0, 1, 1, 1]), 2)[0, 1])(logits)
    assert np.all(np.isfinite(grad))
