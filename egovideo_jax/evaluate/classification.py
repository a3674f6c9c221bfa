"""Classification on labelled clip records: fine-tuned heads, or zero-shot from class names.

Inputs: a records directory with the label block and its `classes.json` (written by
`python -m egovideo_jax.records convert-epic / convert-egtea`, or the demo build). Each clip
is scored on `num_clips` temporal x `num_crops` spatial views of its stored frames and the
views' class probabilities are averaged (LaViLa's EGTEA protocol: 10 clips x 3 crops):
- temporal view k of n: a window of `window_frames` stored frames (default: all), the windows'
  starts evenly spaced from the first to the last possible one; frames are eval-sampled
  inside it (segment middles, `media.sampling.sample_eval`);
- spatial crops: short side resized to the model's input size, then the centre crop (1) or
  the left / centre / right (top / centre / bottom) crops along the long side (3).

With a fine-tuned `VideoClassifier` (the trainer passes its own) each head is scored by its
logits; an action-only head also scores verbs and nouns by marginalising the action
probabilities over `classes.json`'s action -> verb / noun maps (AVION). With an EgoVideo
(`egovideo_jax.load`, the evaluate command) classes are scored zero-shot: the cosine
similarity of the clip to the class name as text (`_` and `:` read as spaces).

Metrics (percent) per head: `{head}_top1`, `{head}_top5` (when there are > 5 classes) and
`{head}_mean_class_acc` (mean of the per-class recalls: EGTEA papers report this one; both
are given, as they differ). Clips without a label for a head do not count for it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate.metrics import marginalize, mean_class_accuracy, softmax, topk_accuracy
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.transforms import normalize
from egovideo_jax.records.classes import ClassMaps, read_classes
from egovideo_jax.records.dataset import open_dataset
from egovideo_jax.records.schema import decode_frames

HEADS = ('verb', 'noun', 'action')


@dataclasses.dataclass
class Annotations:
    records: Path
    classes: ClassMaps
    labels: dict[str, np.ndarray]  # per head: class per clip, -1 where the clip has none


def view_windows(stored: int, window: int, num_clips: int) -> list[tuple[int, int]]:
    """`[start, end)` of `num_clips` windows of `window` frames over `stored` frames, starts
    evenly spaced (rounded) from 0 to `stored - window`."""
    window = min(window or stored, stored)
    starts = np.linspace(0, stored - window, num_clips) if num_clips > 1 else [
        (stored - window) // 2]
    return [(int(round(start)), int(round(start)) + window) for start in starts]


def spatial_crops(frames: np.ndarray, size: int, num_crops: int) -> list[np.ndarray]:
    """uint8 `[T, H, W, 3]` -> `num_crops` (1 or 3) uint8 `[T, size, size, 3]` crops after a
    bicubic short-side resize to `size`: the centre, or start / centre / end of the long
    side."""
    from PIL import Image
    height, width = frames.shape[1:3]
    if height <= width:
        new_height, new_width = size, int(size * width / height)
    else:
        new_height, new_width = int(size * height / width), size
    resized = np.stack([
        np.asarray(Image.fromarray(frame).resize((new_width, new_height),
                                                  Image.Resampling.BICUBIC))
        if (new_width, new_height) != (width, height) else frame for frame in frames])
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    if num_crops == 1:
        offsets = [(top, left)]
    elif new_width >= new_height:
        offsets = [(top, 0), (top, left), (top, new_width - size)]
    else:
        offsets = [(0, left), (top, left), (new_height - size, left)]
    return [resized[:, y:y + size, x:x + size] for y, x in offsets]


class _HeadsModel:
    """A `VideoClassifier` with its parameters, shaped like an `Encoder` for
    `embed_videos`: `encode_video_array` gives every head's logits side by side."""

    def __init__(self, module, params):
        import jax
        import jax.numpy as jnp
        self.module, self.params, self.config = module, params, module.config
        self.heads = tuple(module.heads)

        def logits(params, video, fast):
            out = module.apply({'params': params}, video, fast)
            return jnp.concatenate([out[name] for name, _ in self.heads], axis=-1)
        self._logits = jax.jit(logits)

    def encode_video_array(self, video, fast=None):
        return self._logits(self.params, video, fast)

    def split(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        bounds = np.cumsum([size for _, size in self.heads])[:-1]
        return dict(zip([name for name, _ in self.heads], np.split(scores, bounds, axis=-1)))


def class_text(name: str) -> str:
    return name.replace(':', ' ').replace('_', ' ')


@register('classification')
class Classification(Evaluator):
    DEFAULTS = dict(records='', num_clips=1, num_crops=1,
                    window_frames=0)  # stored frames per temporal view; 0: the whole clip
    evaluates_heads = True  # the trainer passes its whole fine-tuned model

    def read_annotations(self) -> Annotations:
        records = self.path('records')
        if self.config.num_crops not in (1, 3):
            raise ValueError(f'{self.key}.num_crops must be 1 or 3, got {self.config.num_crops}')
        if self.config.num_clips < 1:
            raise ValueError(f'{self.key}.num_clips must be >= 1, got {self.config.num_clips}')
        classes = read_classes(records)
        dataset = open_dataset(records)
        labels = {head: np.full(len(dataset), -1, np.int64) for head in classes.names}
        for index in range(len(dataset)):
            clip = dataset.decode(index)
            for head, value in clip['labels'].items():
                if head not in labels:
                    continue
                if not 0 <= value < classes.num_classes(head):
                    raise ValueError(f'{records}, record {index} ({clip["clip_id"]}): {head} '
                                     f'label {value} is not one of the '
                                     f'{classes.num_classes(head)} classes of classes.json')
                labels[head][index] = value
        labels = {head: values for head, values in labels.items() if (values >= 0).any()}
        if not labels:
            raise ValueError(f'{records}: no clip has a label (the records need the label '
                             f'block: python -m egovideo_jax.records convert-epic / '
                             f'convert-egtea)')
        print(f'{self.name}: {len(dataset)} clips from {records}; classes '
              + ', '.join(f'{head} {classes.num_classes(head)}' for head in labels), flush=True)
        return Annotations(records, classes, labels)

    def chance_levels(self, annotations: Annotations) -> dict[str, float]:
        """A uniform random guess: k / classes for top-k, 1 / classes for the mean class
        accuracy."""
        chance = {}
        for head in annotations.labels:
            classes = annotations.classes.num_classes(head)
            chance[f'{head}_top1'] = 1 / classes
            if classes > 5:
                chance[f'{head}_top5'] = 5 / classes
            chance[f'{head}_mean_class_acc'] = 1 / classes
        return percent(chance)

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
        config = self.config
        heads_model = _HeadsModel(*model) if isinstance(model, tuple) else None
        runner = heads_model or model
        counts = frame_counts(runner.config, config.num_frames)
        size = runner.config.vision.image_size
        dataset = open_dataset(annotations.records)
        views = config.num_clips * config.num_crops

        def load(item: tuple[int, int]) -> list[np.ndarray]:
            index, view = item
            clip = dataset.decode(index)
            stored = len(clip['frames_jpeg'])
            start, end = view_windows(stored, config.window_frames,
                                      config.num_clips)[view // config.num_crops]
            branches = []
            for count in counts:
                frames = decode_frames(clip, sample_eval(start, end, count).tolist(),
                                       shard=str(annotations.records), index=index)
                crop = spatial_crops(frames, size, config.num_crops)[view % config.num_crops]
                branches.append(normalize(crop))
            return branches

        items = [(index, view) for index in range(len(dataset)) for view in range(views)]
        scores = embed_videos(runner, items, load, config.batch_size, config.num_workers,
                              self.mesh, desc=f'{self.name} views')
        if heads_model is not None:
            probs = {head: softmax(logits) for head, logits in heads_model.split(scores).items()}
        else:
            probs = self.zero_shot(model, scores, annotations, embed_texts)
        probs = {head: p.reshape(len(dataset), views, -1).mean(axis=1)
                 for head, p in probs.items()}
        probs.update(self.marginals(probs, annotations.classes))
        metrics = {}
        for head, labels in annotations.labels.items():
            if head not in probs:
                continue
            keep = labels >= 0
            head_probs, head_labels = probs[head][keep], labels[keep]
            metrics[f'{head}_top1'] = topk_accuracy(head_probs, head_labels, 1)
            if head_probs.shape[1] > 5:
                metrics[f'{head}_top5'] = topk_accuracy(head_probs, head_labels, 5)
            metrics[f'{head}_mean_class_acc'] = mean_class_accuracy(
                np.argmax(head_probs, axis=1), head_labels)
        return percent(metrics)

    def zero_shot(self, model, video: np.ndarray, annotations: Annotations,
                  embed_texts) -> dict[str, np.ndarray]:
        """Per head: softmax over the cosine similarities to the class names (no
        temperature, as the zero-shot EK-100 evaluator)."""
        probs = {}
        for head in annotations.labels:
            names = annotations.classes.names[head]
            text = embed_texts(model, [class_text(name) for name in names],
                               self.config.batch_size, desc=f'{self.name} {head} names')
            probs[head] = softmax(video @ text.T)
        return probs

    @staticmethod
    def marginals(probs: dict[str, np.ndarray], classes: ClassMaps) -> dict[str, np.ndarray]:
        """Verb / noun probabilities from the action probabilities, for heads the model does
        not score itself."""
        found = {}
        for head, mapping in (('verb', classes.action_to_verb), ('noun', classes.action_to_noun)):
            if head not in probs and 'action' in probs and mapping is not None \
                    and head in classes.names:
                found[head] = marginalize(probs['action'], np.asarray(mapping),
                                          classes.num_classes(head))
        return found

    def bind_model(self, model_or_params, model_config=None, module=None):
        """A fine-tuned classifier stays (module, params); anything else is an EgoVideo."""
        from egovideo_jax.model.classifier import VideoClassifier
        if isinstance(module, VideoClassifier):
            return module, model_or_params
        return super().bind_model(model_or_params, model_config, module)
