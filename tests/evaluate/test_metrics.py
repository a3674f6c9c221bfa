"""Zero-shot metrics: the spec's known answers, properties, and a per-query reference."""

import numpy as np
import pytest

from egovideo_jax.evaluate import metrics
from egovideo_jax.evaluate.metrics import (
    marginalize,
    mcq_accuracy,
    mean_class_accuracy,
    mir_map,
    mir_metrics,
    mir_ndcg,
    topk_accuracy,
)

SPEC_S1 = [[1, .7, .4, 0], [.3, .9, .6, .1], [.2, .5, .8, .4]]
SPEC_R1 = [[1, .5, .25, 0], [0, 1, .4, 0], [.5, .3, 1, 0]]
SPEC_S2 = [[.9, .8, .1], [.2, .7, .6]]
SPEC_R2 = [[.5, 1, 1], [1, 0, .75]]


def test_spec_fixtures():
    assert mir_ndcg(SPEC_S1, SPEC_R1) == pytest.approx(0.9371789900735429, abs=1e-12)
    assert mir_map(SPEC_S1, SPEC_R1) == pytest.approx(1.0, abs=1e-12)
    assert mir_map(SPEC_S2, SPEC_R2) == pytest.approx(0.6875, abs=1e-12)
    assert mir_ndcg(SPEC_S2, SPEC_R2) == pytest.approx(0.594146, abs=1e-6)


def test_map_sums_graded_relevance_unlike_binary_ap():
    binary = (np.asarray(SPEC_R2) == 1).astype(float)
    assert mir_map(SPEC_S2, binary) == pytest.approx(0.458333, abs=1e-6)


def reference_map_row(scores, relevancy):
    """The spec's AP_q written out per rank, one query at a time."""
    order = np.argsort(-scores)
    total, hits = 0.0, 0
    for k, item in enumerate(order, 1):
        if relevancy[item] == 1:
            total += relevancy[order[:k]].sum() / k
            hits += 1
    return total / hits


def reference_ndcg_row(scores, relevancy):
    k = int(np.sum(relevancy > 0))
    discounts = np.log2(np.arange(k) + 2)
    dcg = np.sum(relevancy[np.argsort(scores)[::-1][:k]] / discounts)
    return dcg / np.sum(np.sort(relevancy)[::-1][:k] / discounts)


def graded_problem(rng, rows=7, cols=11):
    similarity = rng.random((rows, cols))
    relevancy = rng.choice([0.0, 0.25, 0.5, 0.75], size=(rows, cols))
    relevancy[np.arange(rows), rng.integers(0, cols, rows)] = 1.0  # every row has a 1
    relevancy[rng.integers(0, rows, cols), np.arange(cols)] = 1.0  # and every column
    return similarity, relevancy


def test_matches_per_query_reference(rng):
    similarity, relevancy = graded_problem(rng)
    assert mir_map(similarity, relevancy) == pytest.approx(
        np.mean([reference_map_row(s, r) for s, r in zip(similarity, relevancy)]), abs=1e-12)
    assert mir_ndcg(similarity, relevancy) == pytest.approx(
        np.mean([reference_ndcg_row(s, r) for s, r in zip(similarity, relevancy)]), abs=1e-12)


def test_row_blocks_do_not_change_results(rng, monkeypatch):
    similarity, relevancy = graded_problem(rng, rows=23, cols=9)
    whole = mir_metrics(similarity, relevancy)
    monkeypatch.setattr(metrics, '_ROW_BLOCK', 4)
    assert mir_metrics(similarity, relevancy) == pytest.approx(whole, abs=1e-12)


def test_perfect_similarity_scores_one(rng):
    _, relevancy = graded_problem(rng)
    assert mir_metrics(relevancy, relevancy) == pytest.approx(
        {f'{m}_{d}': 1.0 for m in ('map', 'ndcg') for d in ('v2t', 't2v', 'mean')})


def test_permuting_clips_with_relevancy_changes_nothing(rng):
    similarity, relevancy = graded_problem(rng)
    rows, cols = rng.permutation(similarity.shape[0]), rng.permutation(similarity.shape[1])
    assert mir_metrics(similarity[rows][:, cols], relevancy[rows][:, cols]) == pytest.approx(
        mir_metrics(similarity, relevancy), abs=1e-12)


def test_ties_follow_numpy_argsort():
    # All items tie. mAP ranks by argsort(-S): items 0, 1, 2, so the exact match comes first.
    # nDCG ranks by argsort(S)[::-1]: items 2, 1, 0 (the reference's calls).
    similarity = np.zeros((1, 3))
    relevancy = np.array([[1.0, 0.5, 0.0]])
    assert mir_map(similarity, relevancy) == 1.0
    ideal = 1 + 0.5 / np.log2(3)
    assert mir_ndcg(similarity, relevancy) == pytest.approx((0 + 0.5 / np.log2(3)) / ideal)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(3, 2\)'):
        mir_map(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r'\(4,\).*\(4,\)'):
        mir_ndcg(np.zeros(4), np.zeros(4))


def test_rows_without_relevant_items_are_rejected():
    relevancy = np.array([[1.0, 0.5], [0.5, 0.0]])
    with pytest.raises(ValueError, match=r'rows \[1\].*equal to 1'):
        mir_map(np.eye(2), relevancy)
    with pytest.raises(ValueError, match=r'rows \[0\].*positive'):
        mir_ndcg(np.eye(2), np.array([[0.0, 0.0], [1.0, 0.0]]))


def test_mir_metrics_directions():
    similarity, relevancy = np.asarray(SPEC_S1), np.asarray(SPEC_R1)
    relevancy = relevancy.copy()
    relevancy[0, 3] = 1.0  # every column needs an exact match for text -> video
    result = mir_metrics(similarity, relevancy)
    assert result['map_v2t'] == mir_map(similarity, relevancy)
    assert result['map_t2v'] == mir_map(similarity.T, relevancy.T)
    assert result['ndcg_mean'] == pytest.approx((result['ndcg_v2t'] + result['ndcg_t2v']) / 2)


def test_topk_and_mean_class_accuracy():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2])
    assert topk_accuracy(scores, labels, 1) == 0.5  # row 2 ties: index 0 wins, as argmax
    assert topk_accuracy(scores, labels, 2) == 1.0
    predictions = np.argmax(scores, axis=1)  # [0, 2, 0, 2]
    # class 0: 1/1, class 1: 0/2, class 2: 1/1; absent classes do not count
    assert mean_class_accuracy(predictions, labels) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match='labels'):
        topk_accuracy(scores, np.array([0, 1, 3, 0]), 1)


def test_marginalize_sums_actions_per_group():
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    action_to_verb = np.array([0, 2, 0, 2])
    np.testing.assert_allclose(marginalize(probs, action_to_verb, 3), [[0.4, 0.0, 0.6]])
    with pytest.raises(ValueError, match='action_to_group'):
        marginalize(probs, np.array([0, 1]), 3)


def test_mcq_accuracy_per_type():
    scores = np.array([[0.1, 0.9, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 1.0]])
    answers, types = np.array([1, 1, 0]), np.array([1, 2, 2])
    assert mcq_accuracy(scores, answers, types) == {'inter': 1.0, 'intra': 0.0}  # tie -> 0
    assert mcq_accuracy(scores[:1], answers[:1], types[:1]) == {'inter': 1.0}
    with pytest.raises(ValueError, match='question types'):
        mcq_accuracy(scores, answers, np.array([1, 2, 3]))
