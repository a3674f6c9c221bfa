"""Each benchmark end to end on the synthetic fixtures with the tiny model, in both modes,
plus independent recomputations of the MIR and EGTEA numbers from their definitions."""

import json
import math

import numpy as np
import pytest

from egovideo_jax.evaluate.metrics import mean_class_accuracy, mir_metrics, topk_accuracy
from egovideo_jax.evaluate.registry import build_evaluators
from egovideo_jax.io.safe_pickle import load_array
from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.media.video import read_frames, video_info
from egovideo_jax.model.layout import stack_layers
from tests.helpers.eval_fixtures import (
    BATCH_SIZE,
    EPIC_TEST_CLIPS,
    EPIC_VIDEO_FRAMES,
    FPS,
    SINGLE_FRAMES,
    WRITERS,
    tiny_model,
)

METRICS = {
    'ek100_mir': {'map_v2t', 'map_t2v', 'map_mean', 'ndcg_v2t', 'ndcg_t2v', 'ndcg_mean'},
    'ek100_cls': {'action_top1', 'action_top5', 'action_mean_class_acc', 'verb_top1',
                  'noun_top1'},
    'egtea': {'top1', 'mean_class_acc'},
    'egomcq': {'inter', 'intra'},
}


@pytest.fixture(scope='module')
def sections(tmp_path_factory):
    root = tmp_path_factory.mktemp('benchmarks')
    return {name: write(root / name) for name, write in WRITERS.items()}


@pytest.fixture(scope='module')
def results(sections, tmp_path_factory):
    """`(mode, benchmark) -> (metrics, workdir)`, computed on first use."""
    cache = {}

    def result(mode, name):
        if (mode, name) not in cache:
            workdir = tmp_path_factory.mktemp(f'{name}_{mode}')
            evaluator = build_evaluators({name: sections[name]}, workdir=workdir)[name]
            cache[mode, name] = evaluator.run(tiny_model(mode)), workdir
        return cache[mode, name]
    return result


@pytest.mark.parametrize('mode', ['slowfast', 'single'])
@pytest.mark.parametrize('name', list(WRITERS))
def test_benchmark_end_to_end(results, name, mode, capsys):
    metrics, workdir = results(mode, name)
    assert set(metrics) == METRICS[name]
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in metrics.values()), metrics
    saved = json.loads((workdir / name / 'metrics.json').read_text())
    assert saved == {'benchmark': name, 'name': name, 'metrics': metrics}
    if name == 'ek100_mir':
        assert (workdir / name / 'retrievals.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_mir_prints_table(sections, tmp_path, capsys):
    build_evaluators({'ek100_mir': sections['ek100_mir']})['ek100_mir'].run(
        tiny_model('single'))
    out = capsys.readouterr().out
    assert 'ek100_mir (ek100_mir)' in out and 'map_mean' in out and 'ndcg_v2t' in out


def encode_padded(encode, inputs):
    """`encode` over `inputs` (lists of arrays) BATCH_SIZE at a time, zero-padded, as the
    evaluators batch (one compiled shape)."""
    outputs = []
    for start in range(0, len(inputs[0]), BATCH_SIZE):
        chunks = [np.stack(branch[start:start + BATCH_SIZE]) for branch in inputs]
        count = len(chunks[0])
        padded = [np.concatenate([c, np.zeros((BATCH_SIZE - count,) + c.shape[1:], c.dtype)])
                  for c in chunks]
        outputs.append(np.asarray(encode(*padded))[:count])
    return np.concatenate(outputs)


def clip_frames(path, indices, size):
    return eval_transform(read_frames(path, indices), size)


def segment_middles(start, end, n):
    """The spec's evaluation sampler: segment midpoints over frames [start, end)."""
    seg = (end - start - 1) / n
    return [(min(int(round(seg * i) + start), end - 1) + min(int(round(seg * (i + 1)) + start),
                                                              end)) // 2 for i in range(n)]


def test_mir_matches_a_recomputation(sections, results):
    model = tiny_model('slowfast')
    section = sections['ek100_mir']
    size = model.config.vision.image_size
    slow, fast = [], []
    for _, video_id, start_s, stop_s, *_ in EPIC_TEST_CLIPS:
        path = (f'{section.root}/{video_id}.mp4' if video_id == 'P01_01'
                else f'{section.root}/P02/{video_id}.MP4')
        clips = []
        for n in (4, 16):  # LaViLa's range: start frame, max(duration, n) frames, cut at end
            start = round(start_s * FPS)
            end = min(start + max(int((stop_s - start_s) * FPS), n), EPIC_VIDEO_FRAMES)
            clips.append(clip_frames(path, segment_middles(start, end, n), size))
        slow.append(clips[0])
        fast.append(clips[1])
    video = encode_padded(model.encode_video, [slow, fast])
    from egovideo_jax.model.tokenizer import tokenize
    text = encode_padded(model.encode_text,
                         [list(tokenize([clip[4] for clip in EPIC_TEST_CLIPS]))])
    sentence_columns = [0, 1, 3, 4, 5]  # the first clip of each distinct narration
    similarity = ((video @ text.T + 1) / 2)[:, sentence_columns]
    expected = mir_metrics(similarity, load_array(section.relevancy_pkl))
    metrics, _ = results('slowfast', 'ek100_mir')
    assert metrics == pytest.approx({k: 100 * v for k, v in expected.items()}, abs=1e-6)


def test_egtea_matches_a_recomputation(sections, results):
    from tests.helpers.eval_fixtures import EGTEA_ACTIONS, EGTEA_CLIPS
    model = tiny_model('single')
    section = sections['egtea']
    clips = []
    for clip_id, _, _ in EGTEA_CLIPS:
        path = f'{section.root}/{"-".join(clip_id.split("-")[:3])}/{clip_id}.mp4'
        length = video_info(path)[0]
        indices = [math.floor((k + 0.5) * length / SINGLE_FRAMES) for k in range(SINGLE_FRAMES)]
        clips.append(clip_frames(path, indices, model.config.vision.image_size))
    video = encode_padded(model.encode_video, [clips])
    classes = model.encode_text([name.replace('_', ' ').lower() for name in EGTEA_ACTIONS])
    scores = video @ classes.T
    labels = np.array([label - 1 for _, label, _ in EGTEA_CLIPS])
    metrics, _ = results('single', 'egtea')
    assert metrics == pytest.approx({
        'top1': 100 * topk_accuracy(scores, labels, 1),
        'mean_class_acc': 100 * mean_class_accuracy(scores.argmax(1), labels)}, abs=1e-6)


def test_params_with_model_config_give_the_same_metrics(sections, results):
    """The training-loop form: `run(params, model_config)`, unrolled or scanned layers."""
    model = tiny_model('slowfast')
    expected, _ = results('slowfast', 'egomcq')
    evaluator = build_evaluators({'egomcq': sections['egomcq']})['egomcq']
    assert evaluator.run(model.params, model.config) == expected
    assert evaluator.run(stack_layers(model.params), model.config) == expected


def test_batches_sharded_on_a_mesh_give_the_same_metrics(sections, results):
    import jax

    from egovideo_jax.parallel.sharding import make_mesh, replicated
    model = tiny_model('single')
    mesh = make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
    params = jax.device_put(model.params, replicated(mesh))
    expected, _ = results('single', 'egtea')
    evaluator = build_evaluators({'egtea': sections['egtea']}, mesh=mesh)['egtea']
    assert evaluator.run(params, model.config) == pytest.approx(expected, abs=1e-6)
