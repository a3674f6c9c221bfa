"""Zero-shot metrics: numpy arrays in, Python floats (fractions in [0, 1]) out.

Retrieval metrics follow the EPIC-KITCHENS-100 multi-instance retrieval evaluation, quirks
included (see `mir_map`), and rank on the host with numpy's default argsort, as it does, so
ties resolve the same way. Rows are queries: pass `similarity[q, i]` and `relevancy[q, i]` for
query q and item i; `mir_metrics` does both directions.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Rows ranked per block: bounds the argsort temporaries on 9668 x 3842 matrices.
_ROW_BLOCK = 1024
MCQ_TYPES = {1: 'inter', 2: 'intra'}  # EgoMCQ `types`: 1 inter-video, 2 intra-video


def _matrix_pair(similarity, relevancy) -> tuple[np.ndarray, np.ndarray]:
    similarity, relevancy = np.asarray(similarity), np.asarray(relevancy)
    if similarity.ndim != 2 or similarity.shape != relevancy.shape:
        raise ValueError(f'similarity {similarity.shape} and relevancy {relevancy.shape} must '
                         'be 2-D matrices of the same shape (queries x items)')
    return similarity, relevancy


def _row_blocks(num_rows: int) -> Iterator[slice]:
    for start in range(0, num_rows, _ROW_BLOCK):
        yield slice(start, min(start + _ROW_BLOCK, num_rows))


def _check_rows(counts: np.ndarray, what: str):
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f'relevancy rows {empty[:10].tolist()} (of {empty.size}) have no '
                         f'{what}, so their score is undefined (the reference gives NaN)')


def mir_map(similarity, relevancy) -> float:
    """Mean average precision of the EPIC-KITCHENS-100 MIR evaluation, rows as queries.

    Items are ranked by descending similarity (`np.argsort(-similarity)`, the reference's
    call). `AP_q = (1 / N_q) * sum over ranks k with R[q, k] == 1 of
    (sum_{j <= k} R[q, j]) / k`, `N_q = #{R[q, :] == 1}`: precision is taken only at exactly
    relevant items, but its numerator sums the *graded* relevance ranked so far.
    """
    similarity, relevancy = _matrix_pair(similarity, relevancy)
    _check_rows(np.sum(relevancy == 1, axis=1), 'entry equal to 1')
    ranks = np.arange(1, similarity.shape[1] + 1)
    precisions = []
    for rows in _row_blocks(similarity.shape[0]):
        order = np.argsort(-similarity[rows], axis=1)
        ranked = np.take_along_axis(relevancy[rows], order, axis=1)
        exact = ranked == 1
        hits = np.where(exact, np.cumsum(ranked, axis=1), 0) / ranks
        precisions.append(hits.sum(axis=1) / exact.sum(axis=1))
    return float(np.mean(np.concatenate(precisions)))


def _dcg(scores: np.ndarray, relevancy: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per-row DCG over the first `k[q]` items ranked by descending `scores`.

    Descending is `np.argsort(scores)[:, ::-1]`, the reference's call: ties come out in the
    reverse of ascending order, unlike `mir_map`'s `argsort(-scores)`.
    """
    order = np.argsort(scores, axis=1)[:, ::-1]
    ranked = np.take_along_axis(relevancy, order, axis=1)
    positions = np.arange(scores.shape[1])
    gains = np.where(positions < k[:, None], ranked, 0) / np.log2(positions + 2)
    return gains.sum(axis=1)


def mir_ndcg(similarity, relevancy) -> float:
    """Mean normalised DCG, rows as queries: `K_q = #{R[q, :] > 0}`,
    `DCG_q = sum_{p < K_q} R[q, rank_p] / log2(p + 2)` over the ranking by descending
    similarity, divided by the same sum over `R[q]` sorted descending."""
    similarity, relevancy = _matrix_pair(similarity, relevancy)
    k = np.sum(relevancy > 0, axis=1)
    _check_rows(k, 'positive entry')
    ratios = [_dcg(similarity[rows], relevancy[rows], k[rows])
              / _dcg(relevancy[rows], relevancy[rows], k[rows])
              for rows in _row_blocks(similarity.shape[0])]
    return float(np.mean(np.concatenate(ratios)))


def mir_metrics(similarity, relevancy) -> dict[str, float]:
    """Video->text on `(S, R)` (rows clips), text->video on `(S.T, R.T)`, and their means."""
    similarity, relevancy = _matrix_pair(similarity, relevancy)
    metrics = {}
    for name, metric in (('map', mir_map), ('ndcg', mir_ndcg)):
        v2t = metric(similarity, relevancy)
        t2v = metric(similarity.T, relevancy.T)
        metrics.update({f'{name}_v2t': v2t, f'{name}_t2v': t2v, f'{name}_mean': (v2t + t2v) / 2})
    return metrics


def _scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f'scores {scores.shape} must be [examples, classes] and labels '
                         f'{labels.shape} [examples]')
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f'labels must lie in [0, {scores.shape[1]}), got '
                         f'[{labels.min()}, {labels.max()}]')
    return scores, labels


def topk_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of rows whose label is among the `k` highest scores (ties: lower index first,
    so k=1 agrees with `argmax`)."""
    scores, labels = _scores_and_labels(scores, labels)
    top = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def mean_class_accuracy(predictions, labels) -> float:
    """Mean over the classes present in `labels` of the fraction of that class predicted right."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f'predictions {predictions.shape} and labels {labels.shape} must be '
                         '1-D and of the same length')
    recalls = [np.mean(predictions[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(recalls))


def softmax(scores, axis: int = -1) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    exp = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


def marginalize(action_probs, action_to_group, num_groups: int) -> np.ndarray:
    """`[N, groups]`: each group's probability is the sum over the actions mapped to it (e.g.
    verb probabilities from EK-100 action probabilities). Groups without actions get 0."""
    action_probs, action_to_group = np.asarray(action_probs), np.asarray(action_to_group)
    if action_probs.ndim != 2 or action_to_group.shape != action_probs.shape[1:]:
        raise ValueError(f'action_probs {action_probs.shape} must be [examples, actions] and '
                         f'action_to_group {action_to_group.shape} [actions]')
    if action_to_group.size and (action_to_group.min() < 0
                                 or action_to_group.max() >= num_groups):
        raise ValueError(f'action_to_group must lie in [0, {num_groups})')
    one_hot = np.eye(num_groups, dtype=action_probs.dtype)[action_to_group]
    return action_probs @ one_hot


def mcq_accuracy(scores, answers, types) -> dict[str, float]:
    """Multiple choice: `argmax` of each row of `scores [N, choices]` (the first on ties)
    against `answers [N]`, as a fraction per question type (`MCQ_TYPES`: 1 -> 'inter',
    2 -> 'intra'); types absent from `types` are left out."""
    scores, answers = _scores_and_labels(scores, answers)
    types = np.asarray(types)
    if types.shape != answers.shape:
        raise ValueError(f'types {types.shape} must match answers {answers.shape}')
    unknown = sorted(set(types.tolist()) - set(MCQ_TYPES))
    if unknown:
        raise ValueError(f'unknown question types {unknown}; expected {sorted(MCQ_TYPES)}')
    correct = np.argmax(scores, axis=1) == answers
    return {name: float(np.mean(correct[types == code]))
            for code, name in MCQ_TYPES.items() if np.any(types == code)}
