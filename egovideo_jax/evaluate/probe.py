"""Linear probes on frozen features: an L2-regularised multinomial logistic regression
(CLIP's and the peers' linear-probe protocol), its fit, its file and its metrics.

- Features are standardised with the training set's mean and standard deviation, so one grid
  of regularisation strengths suits every feature scale.
- The objective is the mean cross-entropy plus `l2 / 2 * ||W||^2` (the bias is not
  regularised); it is convex, so L-BFGS (optax) finds its one minimum; the fit stops when the
  gradient's largest entry is below `tolerance` or after `max_iterations`.
- `fit_linear_probe` picks `l2` from a grid on a held-out fifth of the training clips
  (drawn from `seed`), then refits on all of them with the best one.

A probe is saved as one `.npz` (weights, bias, standardisation, and a JSON string with the
class names, the chosen `l2` and what the features are), read back with `allow_pickle=False`.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Sequence

import numpy as np

from egovideo_jax.evaluate.metrics import mean_class_accuracy, softmax, topk_accuracy
from egovideo_jax.io.atomic import write_bytes_atomically

PROBE_VERSION = 1
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VALIDATION_FRACTION = 0.2


@dataclasses.dataclass(frozen=True, eq=False)
class LinearProbe:
    weights: np.ndarray  # float32 [features, classes]
    bias: np.ndarray  # float32 [classes]
    mean: np.ndarray  # float32 [features]: standardisation of the inputs
    scale: np.ndarray  # float32 [features]
    class_names: tuple[str, ...]
    l2: float
    feature_spec: dict  # what the features are (model, frames); a user checks it matches

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """float32 `[N, classes]` softmax probabilities of `[N, features]`."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ValueError(f'this probe reads [N, {len(self.mean)}] features, got '
                             f'{features.shape}')
        return softmax(((features - self.mean) / self.scale) @ self.weights + self.bias)

    def class_index(self, name: str) -> int:
        if name not in self.class_names:
            raise ValueError(f'class {name!r} is not one of the probe\'s classes '
                             f'{list(self.class_names)}')
        return self.class_names.index(name)

    def save(self, path: str | os.PathLike) -> None:
        meta = {'probe_version': PROBE_VERSION, 'class_names': list(self.class_names),
                'l2': self.l2, 'feature_spec': self.feature_spec}
        buffer = io.BytesIO()
        np.savez(buffer, weights=self.weights, bias=self.bias, mean=self.mean,
                 scale=self.scale, meta=np.array(json.dumps(meta)))
        write_bytes_atomically(os.fspath(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearProbe:
        try:
            with np.load(path, allow_pickle=False) as arrays:
                meta = json.loads(str(arrays['meta']))
                fields = {name: np.asarray(arrays[name], np.float32)
                          for name in ('weights', 'bias', 'mean', 'scale')}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f'{path}: not a linear probe file ({error})') from None
        if meta.get('probe_version') != PROBE_VERSION:
            raise ValueError(f'{path}: probe version {meta.get("probe_version")}, this reader '
                             f'supports {PROBE_VERSION}')
        return cls(**fields, class_names=tuple(meta['class_names']), l2=float(meta['l2']),
                   feature_spec=meta['feature_spec'])


def _standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 1e-6, scale, 1.0).astype(np.float32)


def fit_softmax_regression(inputs: np.ndarray, labels: np.ndarray, num_classes: int,
                           l2: float, max_iterations: int = 500,
                           tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """(weights [D, C], bias [C]) minimising mean cross-entropy + l2 / 2 ||W||^2 over
    (already standardised) `inputs [N, D]` and int `labels [N]`, from zeros (deterministic)."""
    params = _lbfgs_fit(np.asarray(inputs, np.float32), np.asarray(labels, np.int32),
                        np.float32(l2), np.float32(tolerance), num_classes=num_classes,
                        max_iterations=max_iterations)
    return np.asarray(params['w']), np.asarray(params['b'])


@functools.lru_cache(maxsize=None)
def _compiled_lbfgs(num_classes: int, max_iterations: int):
    """The jitted fit; `l2` and `tolerance` are traced, so a grid compiles once."""
    import jax
    import jax.numpy as jnp
    import optax

    def fit(inputs, labels, l2, tolerance):
        onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)

        def objective(params):
            logits = inputs @ params['w'] + params['b']
            cross_entropy = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))
            return cross_entropy + 0.5 * l2 * jnp.sum(params['w'] ** 2)

        solver = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(carry):
            params, state, _ = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                           value_fn=objective)
            return (optax.apply_updates(params, updates), state,
                    optax.tree.norm(grad, ord=jnp.inf))

        def unfinished(carry):
            _, state, grad_norm = carry
            return (optax.tree.get(state, 'count') < max_iterations) & (grad_norm > tolerance)

        params = {'w': jnp.zeros((inputs.shape[1], num_classes), jnp.float32),
                  'b': jnp.zeros((num_classes,), jnp.float32)}
        params, _, _ = jax.lax.while_loop(unfinished, step,
                                          (params, solver.init(params), jnp.inf))
        return params

    return jax.jit(fit)


def _lbfgs_fit(inputs, labels, l2, tolerance, num_classes: int, max_iterations: int):
    return _compiled_lbfgs(num_classes, max_iterations)(inputs, labels, l2, tolerance)


def _validation_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a seeded fifth of the rows held out, at least one."""
    order = np.random.default_rng(seed).permutation(len(labels))
    held_out = max(1, int(round(VALIDATION_FRACTION * len(labels))))
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                     feature_spec: dict | None = None, l2_grid: Sequence[float] = L2_GRID,
                     seed: int = 0, log=print) -> LinearProbe:
    """The probe over `features [N, D]` and `labels [N]` (indices into `class_names`; -1
    rows are left out), `l2` chosen on a held-out fifth when the grid has several values."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int64)
    keep = labels >= 0
    features, labels = features[keep], labels[keep]
    num_classes = len(class_names)
    if len(labels) < 2:
        raise ValueError(f'a linear probe needs at least 2 labelled clips, got {len(labels)}')
    if labels.max() >= num_classes:
        raise ValueError(f'label {labels.max()} is not one of the {num_classes} classes')
    if not l2_grid or min(l2_grid) < 0:
        raise ValueError(f'l2_grid must hold values >= 0, got {list(l2_grid)}')
    l2 = float(l2_grid[0])
    if len(l2_grid) > 1:
        train_rows, val_rows = _validation_split(labels, seed)
        mean, scale = _standardisation(features[train_rows])
        inputs = (features - mean) / scale
        accuracies = []
        for value in l2_grid:
            weights, bias = fit_softmax_regression(inputs[train_rows], labels[train_rows],
                                                   num_classes, value)
            predictions = np.argmax(inputs[val_rows] @ weights + bias, axis=1)
            accuracies.append(float(np.mean(predictions == labels[val_rows])))
        # the strongest regularisation among the best: the least over-fitted of equals
        best = max(range(len(l2_grid)), key=lambda i: (accuracies[i], l2_grid[i]))
        l2 = float(l2_grid[best])
        log('linear probe: l2 on the held-out fifth (' + ', '.join(
            f'{value:g}: {100 * accuracy:.1f}%' for value, accuracy in zip(l2_grid, accuracies))
            + f') -> {l2:g}')
    mean, scale = _standardisation(features)
    weights, bias = fit_softmax_regression((features - mean) / scale, labels, num_classes, l2)
    return LinearProbe(weights, bias, mean.astype(np.float32), scale, tuple(class_names), l2,
                       dict(feature_spec or {}))


def probe_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Percent top-1, top-5 (more than 5 classes) and mean class accuracy over labelled
    rows."""
    keep = np.asarray(labels) >= 0
    probabilities, labels = probabilities[keep], np.asarray(labels)[keep]
    metrics = {'top1': topk_accuracy(probabilities, labels, 1)}
    if probabilities.shape[1] > 5:
        metrics['top5'] = topk_accuracy(probabilities, labels, 5)
    metrics['mean_class_acc'] = mean_class_accuracy(np.argmax(probabilities, axis=1), labels)
    return {name: 100.0 * value for name, value in metrics.items()}
