"""What a train config optimises (`config.task`): the registry of training tasks.

A task names the Flax module a run trains, the batch entries its step takes, its loss, how
converted EgoVideo weights become its initial parameters, and which part of its parameters
is an EgoVideo (for the zero-shot evaluators and the PyTorch export):

- `contrastive` (configs/cotrain.py): EgoVideo, symmetric InfoNCE over the global batch.
- `mir` (configs/finetune.py ek100_mir, demo_mir): EgoVideo, the max-margin ranking loss over
  the global batch (LaViLa / AVION), or EgoVLP's adaptive margin scaled by each caption's
  relevancy (`loss.adaptive_margin`).
- `classification` (ek100_cls, egtea, demo_cls): `VideoClassifier` (the EgoVideo backbone plus
  linear heads), summed cross-entropy over the heads with label smoothing, mixup / cutmix as
  options; the text tower is carried along frozen, so the backbone stays a whole EgoVideo.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from egovideo_jax.convert.weights import to_reference_state
from egovideo_jax.io.choices import check_choice
from egovideo_jax.model.classifier import VideoClassifier
from egovideo_jax.model.config import EgoVideoConfig, get_model_config
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.parallel import sharding
from egovideo_jax.records.classes import read_classes
from egovideo_jax.train.flops import (
    FlopCount,
    model_flops_from_config,
    model_flops_per_step,
    trainable_predicate,
)
from egovideo_jax.train.loss import classification_loss, contrastive_loss, max_margin_loss
from egovideo_jax.train.mixing import mix_batch

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
BACKBONE = 'backbone'  # where a classifier keeps its EgoVideo parameters
HEAD_KINDS = {  # config.head.kind -> the heads it trains
    'verb_noun_action': ('verb', 'noun', 'action'),  # LaViLa: three heads, summed losses
    'action': ('action',),  # AVION: one head; verb / noun by marginalisation (evaluation)
}
# Loss function of a step: (params, batch, rng) -> (loss, metrics).
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def model_config_from(config) -> EgoVideoConfig:
    return get_model_config(config.model.variant, config.model.mode, config.model.num_frames,
                            fast_frames=config.model.fast_frames)


def build_egovideo(config) -> EgoVideo:
    return EgoVideo(model_config_from(config), dtype=DTYPES[config.model.dtype],
                    scan_layers=config.model.scan_layers,
                    remat_policy=config.model.remat_policy, attention=config.model.attention)


def video_inputs(config) -> tuple[str, ...]:
    return ('slow', 'fast') if config.model.mode == 'slowfast' else ('slow',)


def _traced(module: nn.Module, mesh: Mesh, *args, **kwargs):
    """`module.apply` inside the mesh and the logical-axis rules: the model's activation
    constraints become real sharding constraints and mesh-aware kernels see the mesh."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(
            sharding.LOGICAL_AXIS_RULES):
        return module.apply(*args, **kwargs)


class Task:
    """One training objective; subclasses register themselves by name."""
    name: ClassVar[str] = ''

    def __init__(self, config):
        self.config = config

    def build_module(self) -> nn.Module:
        return build_egovideo(self.config)

    def batch_keys(self) -> tuple[str, ...]:
        return (*video_inputs(self.config), 'tokens')

    def loss_fn(self, module: nn.Module, mesh: Mesh) -> LossFn:
        raise NotImplementedError

    def initial_params(self, egovideo_params) -> Any:
        """A (possibly partial) parameter tree of the module from EgoVideo parameters."""
        return egovideo_params

    def new_parts(self) -> tuple[str, ...]:
        """Top-level parameter subtrees a checkpoint never holds (initialised here)."""
        return ()

    def egovideo(self, module: nn.Module, params) -> tuple[EgoVideo, Any]:
        """(the EgoVideo module, its parameters) inside the trained model."""
        return module, params

    def reference_state(self, params, model_config: EgoVideoConfig) -> dict[str, np.ndarray]:
        """The trained parameters in the reference PyTorch key layout (the export)."""
        return to_reference_state(params, model_config)

    def model_flops(self) -> FlopCount:
        """Analytic model FLOPs of one step on the global batch (train/flops.py)."""
        return model_flops_from_config(self.config)

    def describe(self) -> str:
        return self.name


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def task_of(config) -> Task:
    """The task `config.task` names ('contrastive' when the config has no `task`)."""
    name = config.get('task', 'contrastive')
    check_choice(name, TASKS, 'config.task')
    return TASKS[name](config)


def _outputs(module, mesh, params, batch):
    return _traced(module, mesh, {'params': params}, batch['slow'], batch['tokens'],
                   batch.get('fast'))


@register
class Contrastive(Task):
    name = 'contrastive'

    def loss_fn(self, module, mesh):
        def loss(params, batch, rng):
            out = _outputs(module, mesh, params, batch)
            return contrastive_loss(out['video'], out['text'], out['logit_scale'], mesh)
        return loss


@register
class MultiInstanceRetrieval(Task):
    name = 'mir'

    def batch_keys(self):
        adaptive = self.config.loss.adaptive_margin
        return (*super().batch_keys(), *(('weight',) if adaptive else ()))

    def loss_fn(self, module, mesh):
        settings = self.config.loss

        def loss(params, batch, rng):
            out = _outputs(module, mesh, params, batch)
            weights = batch['weight'] if settings.adaptive_margin else None
            return max_margin_loss(out['video'], out['text'], mesh, margin=settings.margin,
                                   weights=weights)
        return loss

    def describe(self):
        settings = self.config.loss
        kind = 'adaptive (EgoVLP)' if settings.adaptive_margin else 'fixed'
        return f'mir: max-margin ranking loss, {kind} margin {settings.margin}'


def head_sizes(config) -> tuple[tuple[str, int], ...]:
    """((head, classes), ...) of `config.head.kind`: `config.head.num_classes` where set
    (> 0), else the training records' classes.json; both set must agree."""
    check_choice(config.head.kind, HEAD_KINDS, 'config.head.kind')
    given = config.head.num_classes
    names = HEAD_KINDS[config.head.kind]
    classes_file = Path(config.data.train or '') / 'classes.json'
    maps = read_classes(config.data.train) if config.data.train and classes_file.exists() \
        else None
    sizes = []
    for name in names:
        from_records = maps.num_classes(name) if maps and name in maps.names else None
        size = given[name] if given[name] > 0 else from_records
        if size is None:
            raise ValueError(f'config.head.num_classes.{name} is not set and '
                             f'{classes_file} has no {name!r} classes; set one of them')
        if from_records is not None and size != from_records:
            raise ValueError(f'config.head.num_classes.{name}={size}, but {classes_file} '
                             f'lists {from_records} {name} classes')
        sizes.append((name, int(size)))
    return tuple(sizes)


@register
class Classification(Task):
    name = 'classification'

    def build_module(self):
        config = self.config
        return VideoClassifier(model_config_from(config), heads=head_sizes(config),
                               dropout=config.head.dropout, dtype=DTYPES[config.model.dtype],
                               scan_layers=config.model.scan_layers,
                               remat_policy=config.model.remat_policy,
                               attention=config.model.attention)

    def batch_keys(self):
        return (*video_inputs(self.config),
                *(f'label_{name}' for name in HEAD_KINDS[self.config.head.kind]))

    def loss_fn(self, module, mesh):
        head = self.config.head
        sizes = dict(module.heads)
        mixing = head.mixup > 0 or head.cutmix > 0

        def loss(params, batch, rng):
            videos = {name: batch[name] for name in video_inputs(self.config)}
            targets = {name: batch[f'label_{name}'] for name in sizes}
            mix_rng, dropout_rng = jax.random.split(rng)
            smoothing = head.label_smoothing
            if mixing:  # smoothing goes into the mixed targets
                videos, targets = mix_batch(mix_rng, videos, targets, sizes, head.mixup,
                                            head.cutmix, head.switch_prob, smoothing)
                smoothing = 0.0
            logits = _traced(module, mesh, {'params': params}, videos['slow'],
                             videos.get('fast'), train=True, rngs={'dropout': dropout_rng})
            return classification_loss(logits, targets, label_smoothing=smoothing)
        return loss

    def initial_params(self, egovideo_params):
        return {BACKBONE: egovideo_params}  # the heads start from their initialisation

    def new_parts(self) -> tuple[str, ...]:
        return tuple(f'head_{name}' for name, _ in head_sizes(self.config))

    def egovideo(self, module, params):
        return build_egovideo(self.config), params[BACKBONE]

    def reference_state(self, params, model_config):
        """The backbone in the reference layout plus `head.{name}.weight` [classes, embed] /
        `head.{name}.bias` (torch.nn.Linear's layout): load the backbone keys into the
        reference EgoVideo and the `head.` keys into Linear layers."""
        state = to_reference_state(params[BACKBONE], model_config)
        for name, _ in head_sizes(self.config):
            head = jax.device_get(params[f'head_{name}'])
            state[f'head.{name}.weight'] = np.array(np.asarray(head['kernel'], np.float32).T,
                                                    order='C')
            state[f'head.{name}.bias'] = np.asarray(head['bias'], np.float32)
        return state

    def model_flops(self):
        config = self.config
        rules = trainable_predicate(config.optim)
        return model_flops_per_step(
            model_config_from(config), config.data.batch_size,
            lambda path: rules(f'{BACKBONE}/{path}'), scan_layers=bool(config.model.scan_layers),
            grad_accum_steps=config.optim.get('grad_accum_steps', 1), with_text=False)

    def describe(self):
        head = self.config.head
        options = [f'label smoothing {head.label_smoothing}', f'head dropout {head.dropout}']
        if head.mixup or head.cutmix:
            options.append(f'mixup {head.mixup}, cutmix {head.cutmix}')
        return f'classification: {head.kind} heads, ' + ', '.join(options)

