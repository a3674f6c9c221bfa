"""EPIC-KITCHENS-100 zero-shot action classification (CLS).

Label space: every `"{verb_class}:{noun_class}"` pair of `EPIC_100_train.csv` +
`EPIC_100_validation.csv`, sorted as strings (3806 classes). A class's text embedding is the
re-normalised mean of the normalised embeddings of its distinct narrations. The evaluation
clips are `EPIC_100_validation.csv`'s (or `eval_csv`'s). Verb and noun predictions
marginalise the softmax of the raw cosine scores over the actions sharing the verb / noun, as
the reference does (no temperature).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate import epic
from egovideo_jax.evaluate.metrics import marginalize, mean_class_accuracy, softmax, topk_accuracy
from egovideo_jax.evaluate.registry import Evaluator, percent, register


@dataclasses.dataclass
class Annotations:
    class_names: list[str]           # "verb:noun", sorted as strings
    class_texts: list[list[str]]     # distinct narrations per class
    clips: list[epic.EpicClip]
    videos: list[Path]
    labels: np.ndarray               # action class per clip


def label_space(*clip_lists: list[epic.EpicClip]) -> tuple[list[str], list[list[str]]]:
    """Sorted action names and, per action, its distinct narrations in order of appearance."""
    narrations: dict[str, dict[str, None]] = {}
    for clips in clip_lists:
        for clip in clips:
            narrations.setdefault(clip.action, {})[clip.narration] = None
    names = sorted(narrations)
    return names, [list(narrations[name]) for name in names]


def class_embeddings(text_embeddings: np.ndarray, text_class: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Mean of each class's (normalised) text embeddings, re-normalised."""
    sums = np.zeros((num_classes, text_embeddings.shape[1]), np.float64)
    np.add.at(sums, text_class, text_embeddings)
    means = sums / np.bincount(text_class, minlength=num_classes)[:, None]
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def _parts(class_names: list[str], part: int) -> np.ndarray:
    return np.array([int(name.split(':')[part]) for name in class_names], np.int64)


@register('ek100_cls')
class EK100CLS(Evaluator):
    DEFAULTS = dict(root='', train_csv='', validation_csv='',
                    eval_csv='')  # default: the clips of validation_csv

    def read_annotations(self) -> Annotations:
        train_csv, validation_csv = self.path('train_csv'), self.path('validation_csv')
        root = self.path('root')
        validation = epic.read_epic_csv(validation_csv)
        names, texts = label_space(epic.read_epic_csv(train_csv), validation)
        clips = epic.read_epic_csv(self.path('eval_csv')) if self.config.eval_csv else validation
        index = {name: i for i, name in enumerate(names)}
        labels = []
        for clip in clips:
            if clip.action not in index:
                raise ValueError(f'{clip.source}: unknown class {clip.action} (verb_class:'
                                 f'noun_class); the label space comes from {train_csv} and '
                                 f'{validation_csv}')
            labels.append(index[clip.action])
        return Annotations(names, texts, clips, epic.find_videos(root, clips),
                           np.asarray(labels, np.int64))

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        # JAX loads when a model is evaluated: configs read DEFAULTS without it.
        from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
        config = self.config
        texts = [text for class_texts in annotations.class_texts for text in class_texts]
        text_class = np.repeat(np.arange(len(annotations.class_texts)),
                               [len(class_texts) for class_texts in annotations.class_texts])
        classes = class_embeddings(
            embed_texts(model, texts, config.batch_size, desc=f'{self.name} class texts'),
            text_class, len(annotations.class_names))
        loader = epic.ClipLoader(frame_counts(model.config, config.num_frames),
                                 model.config.vision.image_size)
        video = embed_videos(model, list(zip(annotations.clips, annotations.videos)), loader,
                             config.batch_size, config.num_workers, self.mesh,
                             desc=f'{self.name} clips')
        scores = video @ classes.T
        labels = annotations.labels
        probs = softmax(scores)
        verbs, nouns = _parts(annotations.class_names, 0), _parts(annotations.class_names, 1)
        verb_labels = np.array([clip.verb_class for clip in annotations.clips])
        noun_labels = np.array([clip.noun_class for clip in annotations.clips])
        verb_scores = marginalize(probs, verbs, max(verbs.max(), verb_labels.max()) + 1)
        noun_scores = marginalize(probs, nouns, max(nouns.max(), noun_labels.max()) + 1)
        return percent({
            'action_top1': topk_accuracy(scores, labels, 1),
            'action_top5': topk_accuracy(scores, labels, 5),
            'action_mean_class_acc': mean_class_accuracy(np.argmax(scores, axis=1), labels),
            'verb_top1': topk_accuracy(verb_scores, verb_labels, 1),
            'noun_top1': topk_accuracy(noun_scores, noun_labels, 1),
        })
