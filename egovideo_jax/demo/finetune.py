"""Labelled demo records for the fine-tuning demos (`configs/finetune.py:demo_cls / demo_mir`).

The embedded demo dataset (demo/build.py) knows what every clip shows (`actions.csv`: the
action, the hand, the object), so it can stand in for EK-100 with the same label block:

- classes: verbs are the demo actions (`ACTIONS`, all of them, like EK-100's published verb
  list), nouns the objects of the build (`demo_objects(num_objects)`), actions the
  (verb, noun) pairs seen in the training split (as EK-100's action set), named `verb:noun`.
  A held-out clip whose pair never occurs in training has no action label (verb and noun
  still count).
- captions (training split, for MIR): every distinct training narration, with the relevancy
  EK-100 MIR's graded relevancy gives it — 0.5 for a shared verb plus 0.5 for a shared noun —
  kept where it is > 0. The trainer draws a caption above `data.caption_threshold`.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from egovideo_jax.demo.actions import ACTIONS, demo_objects
from egovideo_jax.input.text import clean_narration
from egovideo_jax.records.classes import CLASSES_NAME, ClassMaps, with_labels
from egovideo_jax.records.dataset import open_dataset

LABELLED_SUFFIX = '_labelled'
CAPTIONED_SUFFIX = '_captioned'  # labels and captions: MIR's training split


def read_actions(actions_csv: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """{video_id: (action, object)} of a demo split's actions.csv."""
    with open(actions_csv, newline='', encoding='utf-8') as file:
        rows = list(csv.DictReader(file))
    missing = {'video_id', 'action', 'object'} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f'{actions_csv}: missing columns {sorted(missing)}')
    return {row['video_id']: (row['action'], row['object']) for row in rows}


def demo_class_maps(train_pairs, num_objects: int) -> ClassMaps:
    """Verbs: every demo action; nouns: the build's objects; actions: `train_pairs`' distinct
    (verb, noun) pairs, sorted."""
    verbs = sorted(ACTIONS)
    nouns = sorted(f'{color} {kind}' for color, kind in demo_objects(num_objects))
    pairs = sorted(set(train_pairs))
    unknown = sorted({noun for _, noun in pairs} - set(nouns))
    if unknown:
        raise ValueError(f'demo objects {unknown} are not among the {len(nouns)} objects of '
                         f'num_objects={num_objects}')
    return ClassMaps(names={'verb': verbs, 'noun': nouns,
                            'action': [f'{verb}:{noun}' for verb, noun in pairs]},
                     action_to_verb=[verbs.index(verb) for verb, _ in pairs],
                     action_to_noun=[nouns.index(noun) for _, noun in pairs],
                     source='the embedded demo dataset (egovideo_jax/demo/finetune.py)')


def graded_relevancy(first: tuple[str, str], second: tuple[str, str]) -> float:
    """EK-100 MIR's relevancy of two (verb, noun) pairs: half for each part they share."""
    return 0.5 * (first[0] == second[0]) + 0.5 * (first[1] == second[1])


def _clip_pairs(records, actions: dict[str, tuple[str, str]], actions_csv) -> dict:
    """{clip_id: ((verb, noun), cleaned narration)} of a record split."""
    dataset = open_dataset(records)
    pairs = {}
    for index in range(len(dataset)):
        clip = dataset.decode(index)
        if clip['video_id'] not in actions:
            raise ValueError(f'{records}, record {index}: video {clip["video_id"]!r} is not in '
                             f'{actions_csv}')
        pairs[clip['clip_id']] = (actions[clip['video_id']], clean_narration(clip['narration']))
    return pairs


def label_demo_splits(paths: dict[str, str], num_objects: int, captions: bool,
                      progress: bool = True) -> dict[str, str]:
    """Writes `{split}_labelled` beside the demo's `train` / `heldout` records (idempotent:
    kept when complete) with the label block and classes.json; with `captions` the training
    split is `train_captioned` and has its graded captions too. Returns {'train', 'heldout'}: the labelled directories."""
    splits = {split: _clip_pairs(paths[split], read_actions(paths[f'{split}_actions']),
                                 paths[f'{split}_actions']) for split in ('train', 'heldout')}
    classes = demo_class_maps([pair for pair, _ in splits['train'].values()], num_objects)
    index = {head: {name: i for i, name in enumerate(names)}
             for head, names in classes.names.items()}
    narrations = {}  # distinct training narration -> its (verb, noun)
    for pair, text in splits['train'].values():
        narrations.setdefault(text, pair)
    out = {}
    for split, clips in splits.items():
        with_captions = captions and split == 'train'
        suffix = CAPTIONED_SUFFIX if with_captions else LABELLED_SUFFIX
        destination = Path(paths[split]).parent / f'{split}{suffix}'
        out[split] = os.fspath(destination)
        if (destination / CLASSES_NAME).exists() and (destination / 'manifest.json').exists():
            continue
        labels, caption_table = {}, {}
        for clip_id, ((verb, noun), _) in clips.items():
            labels[clip_id] = {'verb': index['verb'][verb], 'noun': index['noun'][noun]}
            action = index['action'].get(f'{verb}:{noun}')
            if action is not None:
                labels[clip_id]['action'] = action
            if with_captions:
                caption_table[clip_id] = [
                    (text, relevancy) for text, other in sorted(narrations.items())
                    if (relevancy := graded_relevancy((verb, noun), other)) > 0]
        if progress:
            print(f'demo fine-tuning data: labelling {len(clips)} {split} clips -> '
                  f'{destination}', flush=True)
        with_labels(paths[split], destination, labels, classes,
                    captions_by_clip_id=caption_table or None,
                    producer={'command': 'egovideo_jax.demo.finetune', 'split': split,
                              'source': paths[split]})
    return out
