"""Linear probe on frozen features (`linear_probe` evaluator; `python -m egovideo_jax.probe`).

The model stays frozen: the features of the training clips and of the evaluation clips are
extracted once (`features.py`: cached, resumable, split over hosts), an L2-regularised linear
classifier is fit on the training features (`probe.py`: l2 chosen on a held-out fifth), and
the evaluation clips are scored with it.

Where the clips and their classes come from, for each split:
- labelled records (the fine-tuning records: `python -m egovideo_jax.records convert-epic` /
  `convert-egtea`, or the demo's): `train_records` / `records` and the `head` (verb, noun or
  action) whose labels and `classes.json` names are the classes;
- or one records directory per class: `train_classes` / `classes` as
  `"name=DIR,name=DIR"` (e.g. the ego-style filter's `egocentric=...,exocentric=...`).

Outputs (`{workdir}/{name}/`): `metrics.json` (top1, top5 with > 5 classes, mean class
accuracy on the evaluation clips; train_top1 on the training clips), `probe.npz` (the probe,
`probe.LinearProbe.load`), and `features/` (the cache) unless `cache_dir` is set.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate.probe import L2_GRID
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.records.classes import read_classes

PROBE_NAME = 'probe.npz'


@dataclasses.dataclass(frozen=True)
class ProbeSplit:
    """One split's clips: `(class name, records dir)` pairs, or one labelled records dir
    whose `head` labels name the classes (`class_names` from its classes.json)."""
    class_dirs: tuple[tuple[str, Path], ...] = ()
    records: Path | None = None
    head: str = ''
    class_names: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_names or tuple(name for name, _ in self.class_dirs)

    def describe(self) -> str:
        if self.records is not None:
            return f'{self.records} ({self.head}: {len(self.class_names)} classes)'
        return ', '.join(f'{name}={directory}' for name, directory in self.class_dirs)


def parse_class_dirs(text: str, key: str) -> tuple[tuple[str, Path], ...]:
    """`"name=DIR,name=DIR"` -> ((name, DIR), ...); errors name `key`."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(','))):
        name, sep, directory = item.partition('=')
        if not sep or not name.strip() or not directory.strip():
            raise ValueError(f'{key}: expected "name=DIR,name=DIR", got {item!r}')
        if not Path(directory.strip()).is_dir():
            raise ValueError(f'{key}: {directory.strip()} (class {name.strip()!r}) is not a '
                             f'directory')
        pairs.append((name.strip(), Path(directory.strip())))
    names = [name for name, _ in pairs]
    if len(pairs) < 2 or len(set(names)) != len(names):
        raise ValueError(f'{key}: expected at least two distinct classes, got {names}')
    return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class Annotations:
    train: ProbeSplit
    evaluation: ProbeSplit


def split_features(model, split: ProbeSplit, cache_root: Path, spec: dict, desc: str,
                   **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D], labels [N]) of a split's clips (`spec`: `features.feature_spec`);
    labels index `split.classes` (-1: no label for the head)."""
    from egovideo_jax.evaluate.features import extract_features
    if split.records is not None:
        found = extract_features(model, split.records, cache_root, spec, desc=desc, **kwargs)
        labels = found.labels.get(split.head)
        if labels is None:
            raise ValueError(f'{split.records}: no clip has a {split.head!r} label')
        return found.features, labels
    features, labels = [], []
    for index, (name, directory) in enumerate(split.class_dirs):
        found = extract_features(model, directory, cache_root, spec, desc=f'{desc} {name}',
                                 **kwargs)
        features.append(found.features)
        labels.append(np.full(len(found.features), index, np.int64))
    return np.concatenate(features), np.concatenate(labels)


@register('linear_probe')
class LinearProbeEvaluator(Evaluator):
    DEFAULTS = dict(train_records='', records='', head='action', train_classes='',
                    classes='', l2_grid=L2_GRID, seed=0,
                    cache_dir='',  # default {workdir}/{name}/features
                    checkpoint='')  # recorded in the probe's feature spec

    def _split(self, records_field: str, classes_field: str) -> ProbeSplit:
        if bool(self.config[records_field]) == bool(self.config[classes_field]):
            raise ValueError(f'{self.key}: set one of {records_field} (labelled records) or '
                             f'{classes_field} ("name=DIR,name=DIR")')
        if self.config[classes_field]:
            return ProbeSplit(class_dirs=parse_class_dirs(self.config[classes_field],
                                                          f'{self.key}.{classes_field}'))
        records = self.path(records_field)
        names = read_classes(records).names
        head = self.config.head
        if head not in names:
            raise ValueError(f'{self.key}.head: {records}/classes.json has no {head!r} '
                             f'classes; it has {list(names)}')
        return ProbeSplit(records=records, head=head, class_names=tuple(names[head]))

    def read_annotations(self) -> Annotations:
        train = self._split('train_records', 'train_classes')
        evaluation = self._split('records', 'classes')
        if train.classes != evaluation.classes:
            raise ValueError(f'{self.key}: the training classes {list(train.classes)[:5]}... '
                             f'and the evaluation classes {list(evaluation.classes)[:5]}... '
                             f'differ')
        print(f'{self.name}: train {train.describe()}; evaluate {evaluation.describe()}',
              flush=True)
        return Annotations(train, evaluation)

    def chance_levels(self, annotations: Annotations) -> dict[str, float]:
        classes = len(annotations.train.classes)
        chance = {'top1': 1 / classes, 'mean_class_acc': 1 / classes}
        if classes > 5:
            chance['top5'] = 5 / classes
        return percent(chance)

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        from egovideo_jax.evaluate.features import feature_spec
        from egovideo_jax.evaluate.probe import fit_linear_probe, probe_metrics
        config = self.config
        cache_root = Path(config.cache_dir) if config.cache_dir else (
            (self.outdir or Path('.')) / 'features')
        spec = feature_spec(model, config.num_frames, config.checkpoint)  # hashes the params
        options = dict(batch_size=config.batch_size, num_workers=config.num_workers)
        train_x, train_y = split_features(model, annotations.train, cache_root, spec,
                                          f'{self.name} train', **options)
        eval_x, eval_y = split_features(model, annotations.evaluation, cache_root, spec,
                                        f'{self.name} eval', **options)
        print(f'{self.name}: {int((train_y >= 0).sum())} training clips, '
              f'{int((eval_y >= 0).sum())} evaluation clips, '
              f'{len(annotations.train.classes)} classes', flush=True)
        probe = fit_linear_probe(train_x, train_y, annotations.train.classes, spec,
                                 l2_grid=tuple(config.l2_grid), seed=config.seed)
        if self.outdir is not None:
            self.outdir.mkdir(parents=True, exist_ok=True)
            probe.save(self.outdir / PROBE_NAME)
        metrics = probe_metrics(probe.probabilities(eval_x), eval_y)
        metrics['train_top1'] = probe_metrics(probe.probabilities(train_x), train_y)['top1']
        return metrics


class ProbeScorer:
    """Clips' frames -> the probability of one class of a probe over `model`'s features
    (the feature spec's frame counts, centre view); what the ego-style filter applies."""

    def __init__(self, model, probe, positive: str, batch_size: int = 8):
        from egovideo_jax.evaluate.features import params_digest
        spec = probe.feature_spec
        if spec.get('params_sha256') != params_digest(model.params):
            raise ValueError(f'the probe was fit on features of other weights than '
                             f'{spec.get("checkpoint") or "this model"} '
                             f'(params_sha256 differs); use the checkpoint it was fit on')
        self.model, self.probe, self.batch_size = model, probe, batch_size
        self.column = probe.class_index(positive)
        self.counts = tuple(spec['frames'])

    def __call__(self, clips) -> np.ndarray:
        from tqdm import tqdm

        from egovideo_jax.evaluate.embedding import embed_videos
        from egovideo_jax.evaluate.features import clip_inputs
        size = self.model.config.vision.image_size

        def load(frames):
            return clip_inputs(lambda indices: frames[indices], len(frames), self.counts, size)

        with tqdm(disable=True) as quiet:  # the filter stage shows the progress
            features = embed_videos(self.model, list(clips), load, self.batch_size,
                                    num_workers=0, progress=quiet)
        return self.probe.probabilities(features)[:, self.column]
