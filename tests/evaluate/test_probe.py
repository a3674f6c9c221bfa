"""Linear probes on frozen features: the fit's optimality conditions, the l2 choice, the probe
file, the feature cache (resume, invalidation, parts per host) and `python -m
egovideo_jax.probe` end to end on the tiny model over colour clips."""
import json
import subprocess
import sys

import numpy as np
import pytest

import egovideo_jax
from egovideo_jax.evaluate.features import extract_features, feature_spec, parts_of_process
from egovideo_jax.evaluate.linear_probe import parse_class_dirs
from egovideo_jax.evaluate.probe import (
    LinearProbe,
    fit_linear_probe,
    fit_softmax_regression,
    probe_metrics,
)
from egovideo_jax.records import dataset
from tests.helpers.train_fixtures import COLOURS, REPO, make_clip, write_labelled_dataset


def _blobs(num=240, dim=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, dim))
    labels = rng.integers(0, classes, num)
    return (centres[labels] + rng.standard_normal((num, dim))).astype(np.float32), labels


@pytest.mark.parametrize('l2', [1e-3, 0.1])
def test_fit_is_the_regularised_optimum(l2):
    """The gradient of mean cross-entropy + l2/2 ||W||^2 vanishes at the fit (computed here
    in float64 numpy, independently of the JAX objective)."""
    inputs, labels = _blobs()
    weights, bias = fit_softmax_regression(inputs, labels, 3, l2)
    logits = inputs.astype(np.float64) @ weights + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    residual = probs - np.eye(3)[labels]
    grad_w = inputs.T @ residual / len(labels) + l2 * weights
    grad_b = residual.mean(axis=0)
    assert np.abs(grad_w).max() < 1e-4 and np.abs(grad_b).max() < 1e-4
    stronger, _ = fit_softmax_regression(inputs, labels, 3, 10 * l2)
    assert np.linalg.norm(stronger) < np.linalg.norm(weights)  # more l2, smaller weights


def test_probe_picks_l2_on_held_out_clips_and_round_trips(tmp_path):
    inputs, labels = _blobs()
    labels[:5] = -1  # unlabelled rows are left out
    logs = []
    probe = fit_linear_probe(inputs, labels, ['a', 'b', 'c'], {'feature': 'test'},
                             l2_grid=(1e-3, 1e-1, 1e3), log=logs.append)
    assert probe.l2 in (1e-3, 1e-1)  # 1e3 flattens the weights to chance
    assert 'held-out fifth' in logs[0] and '1000: ' in logs[0]
    metrics = probe_metrics(probe.probabilities(inputs), labels)
    assert metrics['top1'] > 90 and set(metrics) == {'top1', 'mean_class_acc'}
    probe.save(tmp_path / 'probe.npz')
    loaded = LinearProbe.load(tmp_path / 'probe.npz')
    np.testing.assert_array_equal(loaded.probabilities(inputs), probe.probabilities(inputs))
    assert loaded.class_names == ('a', 'b', 'c') and loaded.feature_spec == {'feature': 'test'}
    assert loaded.class_index('c') == 2
    with pytest.raises(ValueError, match="class 'd' is not one of"):
        loaded.class_index('d')
    with pytest.raises(ValueError, match=r'reads \[N, 12\] features'):
        loaded.probabilities(inputs[:, :5])
    (tmp_path / 'bad.npz').write_bytes(b'not a probe')
    with pytest.raises(ValueError, match='bad.npz: not a linear probe file'):
        LinearProbe.load(tmp_path / 'bad.npz')


def test_parts_are_split_over_processes():
    assert parts_of_process(5, 0, 2) == [0, 2, 4] and parts_of_process(5, 1, 2) == [1, 3]
    assert parts_of_process(3, 0, 1) == [0, 1, 2]


def test_class_dirs_are_parsed_and_checked(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    pairs = parse_class_dirs(f'ego={tmp_path / "a"}, exo={tmp_path / "b"}', 'probe.classes')
    assert [name for name, _ in pairs] == ['ego', 'exo']
    with pytest.raises(ValueError, match=r'probe\.classes: .*nowhere .*not a directory'):
        parse_class_dirs(f'ego={tmp_path / "a"},exo={tmp_path / "nowhere"}', 'probe.classes')
    with pytest.raises(ValueError, match='at least two distinct classes'):
        parse_class_dirs(f'ego={tmp_path / "a"}', 'probe.classes')


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('tiny') / 'model'
    egovideo_jax.load(None, variant='tiny', mode='single', verbose=False).save(path)
    return path


def _colour_dir(directory, colour_index: int, records):
    """Records of the colour clips `records` whose colour is `colour_index`."""
    with dataset.DatasetWriter(directory, records_per_shard=4) as writer:
        for record in records:
            if record % len(COLOURS) == colour_index:
                writer.add(make_clip(record))
    return directory


def test_feature_cache_resumes_and_follows_the_model(tmp_path, tiny_checkpoint, capsys):
    records = write_labelled_dataset(tmp_path / 'data', num_clips=10)
    model = egovideo_jax.load(tiny_checkpoint, variant='tiny', mode='single', verbose=False)
    options = dict(batch_size=4, num_workers=0, part_clips=4)
    spec = feature_spec(model, num_frames=2)
    first = extract_features(model, records, tmp_path / 'cache', spec, **options)
    assert first.features.shape == (10, model.config.embed_dim)
    assert first.clip_ids == [f'clip{record}' for record in range(10)]
    np.testing.assert_array_equal(first.labels['verb'], np.arange(10) % len(COLOURS))
    np.testing.assert_allclose(np.linalg.norm(first.features, axis=1), 1.0, atol=1e-5)
    assert 'embedding 10 clips' in capsys.readouterr().out

    # A killed run: one part missing; the rerun embeds only its clips, with the same result.
    cache = next((tmp_path / 'cache').iterdir())
    assert sorted(path.name for path in cache.glob('part-*.npz')) == [
        'part-00000.npz', 'part-00001.npz', 'part-00002.npz']
    (cache / 'part-00001.npz').unlink()
    again = extract_features(model, records, tmp_path / 'cache', spec, **options)
    assert '2 of 3 parts cached' in capsys.readouterr().out
    np.testing.assert_array_equal(again.features, first.features)

    # Other parameters: another cache, never the stale features.
    model.params = {**model.params, 'logit_scale': model.params['logit_scale'] + 1}
    extract_features(model, records, tmp_path / 'cache', feature_spec(model, num_frames=2),
                     **options)
    assert 'embedding 10 clips' in capsys.readouterr().out
    assert len(list((tmp_path / 'cache').iterdir())) == 2


def test_probe_command_learns_colours_from_frozen_features(tmp_path, tiny_checkpoint):
    """One records directory per class (red vs blue clips); training and evaluation clips
    differ (other records, other noise). A random frozen tiny model still separates solid
    colours, so the probe must beat chance (50%) clearly."""
    train = {name: _colour_dir(tmp_path / f'train_{name}', index, range(0, 32))
             for index, name in ((0, 'red'), (2, 'blue'))}
    held_out = {name: _colour_dir(tmp_path / f'eval_{name}', index, range(32, 48))
                for index, name in ((0, 'red'), (2, 'blue'))}
    out = tmp_path / 'out'

    def classes(dirs):
        return ','.join(f'{name}={path}' for name, path in dirs.items())

    command = [sys.executable, '-m', 'egovideo_jax.probe', f'--checkpoint={tiny_checkpoint}',
               '--variant=tiny', '--mode=single', '--clip-frames=2', '--batch-size=4',
               f'--train-classes={classes(train)}', f'--classes={classes(held_out)}',
               f'--out={out}', '--l2=0.01', '--l2=1']
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'linear_probe: 16 training clips, 8 evaluation clips, 2 classes' in result.stdout
    metrics = json.loads((out / 'linear_probe' / 'metrics.json').read_text())
    assert metrics['metrics']['top1'] == 100.0 and metrics['chance']['top1'] == 50.0
    probe = LinearProbe.load(out / 'linear_probe' / 'probe.npz')
    assert probe.class_names == ('red', 'blue') and probe.l2 in (0.01, 1.0)
    assert probe.feature_spec['variant'] == 'tiny' and probe.feature_spec['frames'] == [2]

    # Bad input is named before the model loads.
    bad = subprocess.run([*command[:-2], '--classes=red=/nowhere,blue=/nowhere'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and '/nowhere' in bad.stderr and 'not a directory' in bad.stderr
