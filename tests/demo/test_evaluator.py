"""Demo retrieval metrics: known answers on hand-made embeddings."""
import numpy as np
import pytest
from PIL import Image

from egovideo_jax.demo.evaluator import (
    clip_text,
    pair_accuracy,
    partner_narration,
    recall_at,
    retrieval_metrics,
)


def test_perfect_embeddings_score_one():
    texts = ['shakes the cup', 'holds the cup', 'moves the ball']
    clip_texts = ['shakes the cup', 'holds the cup', 'shakes the cup', 'moves the ball']
    text = np.eye(3, dtype=np.float32)
    video = np.stack([text[texts.index(t)] for t in clip_texts])
    metrics = retrieval_metrics(video, text, clip_texts, texts)
    assert metrics == pytest.approx({name: 1.0 for name in metrics})


def test_known_answer_with_one_confusion():
    # Clip 1 ("holds") looks exactly like "shakes": V->T ranks "shakes" first for it.
    texts = ['holds', 'shakes']
    clip_texts = ['shakes', 'holds']
    text = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)   # holds, shakes
    video = np.array([[1.0, 0.0], [0.9, 0.1]], np.float32)  # both near "shakes"
    metrics = retrieval_metrics(video, text, clip_texts, texts)
    # Similarity rows are clips, columns [holds, shakes].
    similarity = video @ text.T
    np.testing.assert_allclose(similarity, [[0.0, 1.0], [0.1, 0.9]], atol=1e-6)
    assert metrics['v2t_r1'] == pytest.approx(0.5)   # clip 0 right, clip 1 wrong
    assert metrics['v2t_r5'] == pytest.approx(1.0)
    assert metrics['v2t_map'] == pytest.approx((1.0 + 0.5) / 2)
    # T->V: "holds" ranks clip 1 (0.1) above clip 0 (0.0) -> right; "shakes" ranks clip 0
    # (1.0) above clip 1 (0.9) -> right.
    assert metrics['t2v_r1'] == pytest.approx(1.0)


def test_recall_at_and_text_fields():
    similarity = np.array([[0.2, 0.9, 0.5]])
    relevancy = np.array([[0.0, 0.0, 1.0]])
    assert recall_at(similarity, relevancy, 1) == 0.0
    assert recall_at(similarity, relevancy, 2) == 1.0
    clip = {'narration': '#C C shakes the red cup', 'hod': ['The right hand shakes the cup.']}
    assert clip_text(clip, 'narration') == 'C shakes the red cup'
    assert clip_text(clip, 'hod') == 'The right hand shakes the cup.'
    assert clip_text({**clip, 'hod': []}, 'hod') == 'C shakes the red cup'


def test_pair_accuracy_and_partner_narrations():
    own = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    partner = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    video = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    # Right, wrong, and a tie (own == partner) counting half.
    assert pair_accuracy(video, own, partner) == pytest.approx(1.5 / 3)
    row = {'action': 'shake', 'hand': 'left', 'object': 'red cup', 'direction': ''}
    assert partner_narration(row) == 'C holds the red cup'
    row = {'action': 'back_and_forth', 'hand': 'right', 'object': 'blue ball',
           'direction': 'left'}
    assert partner_narration(row) == 'C moves the blue ball to the left and back'


def test_demo_retrieval_end_to_end_on_built_demo_records(tmp_path):
    import ml_collections

    from egovideo_jax import load
    from egovideo_jax.demo.build import build_demo_dataset
    from egovideo_jax.evaluate.registry import build_evaluators

    paths = build_demo_dataset(tmp_path / 'demo', train_clips=2, heldout_clips=12, seed=0,
                               size=64, progress=False)
    evals = ml_collections.ConfigDict({'demo': dict(
        type='demo_retrieval', records=paths['heldout'], actions_csv=paths['heldout_actions'],
        batch_size=4, num_workers=0)})
    evaluator = build_evaluators(evals, workdir=tmp_path / 'eval')['demo']
    metrics = evaluator.run(load(variant='tiny', mode='slowfast', verbose=False))
    assert {f'all/{d}_{m}' for d in ('v2t', 't2v') for m in ('r1', 'r5', 'map')} <= set(metrics)
    assert 'fast_motion/pair_accuracy' in metrics  # 12 clips: both fast-motion pairs appear
    assert all(0.0 <= value <= 100.0 for value in metrics.values())
    assert (tmp_path / 'eval' / 'demo' / 'metrics.json').exists()
    with Image.open(tmp_path / 'eval' / 'demo' / 'retrievals.png') as image:
        image.verify()
