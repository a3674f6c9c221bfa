"""The evaluator registry (big_vision style) and the interface every benchmark implements.

Configure one section per evaluator; `type` picks the benchmark, the other fields override
its defaults (`default_config(type)` lists them all):

    config.evals.mir = ConfigDict(dict(type='ek100_mir', root='/data/EK100/videos',
        clips_csv=..., sentences_csv=..., relevancy_pkl=..., every_steps=5000))
    evaluators = build_evaluators(config.evals, workdir=workdir, mesh=mesh)

Construction is cheap and reads nothing; the annotation files are read and checked on the
first `prepare()` or `run()` and kept for later runs. The interface:

    evaluator.run(model: EgoVideoModel) -> dict[str, float]
    evaluator.run(params, model_config: EgoVideoConfig) -> dict[str, float]

The second form is for a training loop: `params` as the train state holds them (scanned or
unrolled layers, sharded or not), evaluated in float32:

    for evaluator in evaluators.values():
        if evaluator.should_run(step):
            metrics = evaluator.run(state.params, model_config)

Metrics are percentages. Each run prints a table and, with a `workdir`, writes
`{workdir}/{name}/metrics.json` (and benchmark-specific files, e.g. the MIR retrieval figure).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import ml_collections

from egovideo_jax.io.atomic import write_json_atomically

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from egovideo_jax.model.config import EgoVideoConfig

# Fields every evaluator has. num_frames: frames per clip for single-branch models (slow/fast
# models always take their own 4 + 16); num_workers: clip-decoding threads; every_steps: how
# often a training loop runs it (0: only at the end of training; the trainer always runs
# every evaluator after the last step).
COMMON_DEFAULTS = dict(batch_size=16, num_workers=4, num_frames=16, every_steps=0)

# Evaluator type -> the module that implements (and registers) it. Imported on first use, so
# configs read an evaluator's fields without importing JAX, and a benchmark module may live
# in a package above this one (the demo's).
EVALUATOR_MODULES = {
    'ek100_mir': 'egovideo_jax.evaluate.ek100_mir',
    'ek100_cls': 'egovideo_jax.evaluate.ek100_cls',
    'egtea': 'egovideo_jax.evaluate.egtea',
    'egomcq': 'egovideo_jax.evaluate.egomcq',
    'classification': 'egovideo_jax.evaluate.classification',  # labelled records; heads
    'linear_probe': 'egovideo_jax.evaluate.linear_probe',  # frozen features, fitted probe
    'demo_retrieval': 'egovideo_jax.demo.evaluator',
    'demo_mir': 'egovideo_jax.demo.mir',
}
EVALUATORS: dict[str, type[Evaluator]] = {}


def register(name: str):
    """Class decorator: makes the evaluator available as `type=name`."""
    def decorate(cls: type[Evaluator]) -> type[Evaluator]:
        if name in EVALUATORS:
            raise ValueError(f'evaluator type {name!r} is registered twice')
        cls.type = name
        EVALUATORS[name] = cls
        return cls
    return decorate


def evaluator_class(evaluator_type: str, key: str = 'evaluator type') -> type[Evaluator]:
    """The class registered as `evaluator_type`, importing its module on first use."""
    if evaluator_type not in EVALUATORS:
        if evaluator_type not in EVALUATOR_MODULES:
            raise ValueError(f'{key}: unknown evaluator type {evaluator_type!r}; choose from '
                             f'{sorted(EVALUATOR_MODULES)}')
        importlib.import_module(EVALUATOR_MODULES[evaluator_type])  # registers itself
    return EVALUATORS[evaluator_type]


def percent(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: 100.0 * value for name, value in metrics.items()}


class Evaluator:
    """One benchmark (zero-shot, or of fine-tuned heads: `evaluates_heads`). Subclasses set
    `DEFAULTS` (their own fields) and implement
    `read_annotations()` (read and check every input file; no model needed) and
    `evaluate(model, annotations) -> metrics`."""

    type: ClassVar[str] = ''
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # True: a trainer passes its whole model (e.g. a classifier with heads), not only the
    # EgoVideo inside it.
    evaluates_heads: ClassVar[bool] = False

    def __init__(self, config: ml_collections.ConfigDict, name: str | None = None,
                 workdir: str | os.PathLike | None = None, mesh: Mesh | None = None,
                 config_key: str | None = None):
        self.config = config
        self.name = name or self.type
        self.key = config_key or f'config.evals.{self.name}'
        self.outdir = Path(workdir) / self.name if workdir else None
        self.mesh = mesh
        self._annotations = None
        self._chance = None

    def path(self, field: str) -> Path:
        """A required file or folder setting; it must be set and exist."""
        value = self.config[field]
        if not value:
            raise ValueError(f'{self.key}.{field} is not set')
        if not os.path.exists(value):
            raise ValueError(f'{self.key}.{field}: {value} does not exist')
        return Path(value)

    def should_run(self, step: int) -> bool:
        every = self.config.every_steps
        return every > 0 and step % every == 0

    def prepare(self):
        """Reads and checks the annotation files once; errors name the file and row."""
        if self._annotations is None:
            self._annotations = self.read_annotations()
        return self._annotations

    def run(self, model_or_params: Any, model_config: EgoVideoConfig | None = None,
            module=None) -> dict[str, float]:
        """Evaluates an `EgoVideoModel`, or params with their config, or params with the
        Flax `module` they belong to (the trainer passes its own)."""
        model = self.bind_model(model_or_params, model_config, module)
        annotations = self.prepare()
        metrics = self.evaluate(model, annotations)
        if self._chance is None:
            self._chance = self.chance_levels(annotations)
        print(format_table(f'{self.name} ({self.type})', metrics, self._chance), flush=True)
        if self.outdir is not None:
            self.outdir.mkdir(parents=True, exist_ok=True)
            summary = {'benchmark': self.type, 'name': self.name, 'metrics': metrics}
            if self._chance:
                summary['chance'] = self._chance
            write_json_atomically(self.outdir / 'metrics.json', summary)
        return metrics

    def bind_model(self, model_or_params: Any, model_config: EgoVideoConfig | None = None,
                   module=None):
        """What `evaluate` gets: an `Encoder` (embedding.as_model) by default."""
        from egovideo_jax.evaluate.embedding import as_model  # JAX loads with a model
        return as_model(model_or_params, model_config, module)

    def chance_levels(self, annotations) -> dict[str, float]:
        """{metric: what a model without information scores}, for the metrics where a
        benchmark knows it; shown beside the metrics in tables and reports."""
        return {}

    def read_annotations(self):
        raise NotImplementedError

    def evaluate(self, model, annotations) -> dict[str, float]:
        raise NotImplementedError


def format_table(title: str, metrics: Mapping[str, float],
                 chance: Mapping[str, float] | None = None) -> str:
    chance = chance or {}
    width = max([len(name) for name in metrics] + [len('metric')])
    lines = [title, f'  {"metric":<{width}}  {"value":>7}' + ('   chance' if chance else '')]
    lines += [f'  {name:<{width}}  {value:7.2f}'
              + (f'  {chance[name]:7.2f}' if name in chance else '')
              for name, value in metrics.items()]
    return '\n'.join(lines)


def default_config(evaluator_type: str) -> ml_collections.ConfigDict:
    """Every field of an evaluator type with its default (paths empty)."""
    defaults = evaluator_class(evaluator_type).DEFAULTS
    return ml_collections.ConfigDict({'type': evaluator_type, **COMMON_DEFAULTS, **defaults})


def build_evaluators(evals: Mapping[str, Any], workdir: str | os.PathLike | None = None,
                     mesh: Mesh | None = None, config_key: str = 'config.evals'
                     ) -> dict[str, Evaluator]:
    """`{name: Evaluator}` from `{name: section}`; each section needs `type` and may set any
    field of `default_config(type)`. Errors name the config key (`config_key.name.field`)."""
    evaluators = {}
    for name, section in evals.items():
        key = f'{config_key}.{name}'
        evaluator_type = section.get('type')
        if not evaluator_type:
            raise ValueError(f'{key}.type is not set; choose from '
                             f'{sorted(EVALUATOR_MODULES)}')
        cls = evaluator_class(evaluator_type, f'{key}.type')
        config = default_config(evaluator_type)
        for field, value in section.items():
            if field not in config:
                raise ValueError(f'{key}.{field}: not a field of the {evaluator_type} '
                                 f'evaluator; its fields: {sorted(config)}')
            config[field] = value
        for field in ('batch_size', 'num_frames'):
            if config[field] < 1:
                raise ValueError(f'{key}.{field} must be >= 1, got {config[field]}')
        evaluators[name] = cls(config, name, workdir, mesh, key)
    return evaluators

