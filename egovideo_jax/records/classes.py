"""`classes.json`: the class names behind the label indices of a labelled dataset directory,
and `with_labels`, which adds the label block to an existing dataset.

`DIR/classes.json` (version 1), written atomically beside `manifest.json`:

    {"classes_version": 1,
     "source": "EPIC_100_train.csv",            # where the classes come from
     "names": {"verb": ["take", ...],            # per head, index -> name; EGTEA and the
               "noun": ["tap", ...],             # demo have only "action"
               "action": ["take:tap", ...]},
     "action_to_verb": [0, ...],                 # per action, its verb and noun index;
     "action_to_noun": [0, ...]}                 # null when the dataset has no such map

A clip's `labels[head]` (schema label block) indexes `names[head]`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from egovideo_jax.io.atomic import write_json_atomically
from egovideo_jax.records import schema
from egovideo_jax.records.dataset import FORMATS, DatasetWriter, open_dataset

CLASSES_NAME = 'classes.json'
CLASSES_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class ClassMaps:
    """Class names per head (`verb`, `noun`, `action`: `schema.LABEL_NAMES`) and, for
    EK-100, the action -> verb / noun maps (int64 [num actions]) or None."""
    names: dict[str, list[str]]
    action_to_verb: np.ndarray | None
    action_to_noun: np.ndarray | None
    source: str

    def __post_init__(self):
        problems = check_class_maps(self)
        if problems:
            raise ValueError(f'class maps from {self.source}: ' + '; '.join(problems))

    def num_classes(self, head: str) -> int:
        if head not in self.names:
            raise KeyError(f'class maps from {self.source} have no {head!r} head; they have '
                           f'{list(self.names)}')
        return len(self.names[head])

    def to_json(self) -> dict:
        def listed(array):
            return None if array is None else np.asarray(array).tolist()

        return {'classes_version': CLASSES_VERSION, 'source': self.source,
                'names': {head: list(names) for head, names in self.names.items()},
                'action_to_verb': listed(self.action_to_verb),
                'action_to_noun': listed(self.action_to_noun)}


def check_class_maps(maps: ClassMaps) -> list[str]:
    problems = []
    if not isinstance(maps.names, Mapping) or not maps.names:
        return ['names: expected a non-empty dict of head -> list of names']
    for head, names in maps.names.items():
        if head not in schema.LABEL_NAMES:
            problems.append(f'names: unknown head {head!r}; heads are {list(schema.LABEL_NAMES)}')
        elif (isinstance(names, str) or not isinstance(names, Sequence) or not names
              or not all(isinstance(name, str) for name in names)):
            problems.append(f'names[{head}]: expected a non-empty list of str')
    for part in ('verb', 'noun'):
        key = f'action_to_{part}'
        array = getattr(maps, key)
        if array is None:
            continue
        array = np.asarray(array)
        if 'action' not in maps.names:
            problems.append(f'{key}: given, but there is no action head')
            continue
        expected = len(maps.names['action'])
        if array.shape != (expected,) or not np.issubdtype(array.dtype, np.integer):
            problems.append(f'{key}: expected {expected} integers (one per action), got '
                            f'{array.dtype} {array.shape}')
        elif part in maps.names and not ((array >= 0) & (array < len(maps.names[part]))).all():
            problems.append(f'{key}: values must be in 0..{len(maps.names[part]) - 1} (the '
                            f'{part} classes)')
    return problems


def write_classes(directory, maps: ClassMaps) -> str:
    """Writes `DIR/classes.json` atomically; returns its path."""
    path = os.path.join(os.fspath(directory), CLASSES_NAME)
    write_json_atomically(path, maps.to_json())
    return path


def read_classes(directory) -> ClassMaps:
    """The `classes.json` of a dataset directory; errors name the file and the key."""
    path = os.path.join(os.fspath(directory), CLASSES_NAME)
    try:
        with open(path, encoding='utf-8') as file:
            value = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: not valid JSON: {error}') from error
    if not isinstance(value, dict):
        raise ValueError(f'{path}: expected a JSON object')
    for key in ('classes_version', 'source', 'names'):
        if key not in value:
            raise ValueError(f'{path}: missing key {key!r}')
    if value['classes_version'] != CLASSES_VERSION:
        raise ValueError(f'{path}: key classes_version: version {value["classes_version"]}, '
                         f'this reader supports {CLASSES_VERSION}')
    if not isinstance(value['names'], dict):
        raise ValueError(f'{path}: key names: expected an object of head -> list of names')

    def mapping(key):
        array = value.get(key)
        if array is None:
            return None
        if not isinstance(array, list) or not all(
                isinstance(item, int) and not isinstance(item, bool) for item in array):
            raise ValueError(f'{path}: key {key}: expected a list of integers or null')
        return np.asarray(array, np.int64).reshape(-1)

    try:
        return ClassMaps({head: names for head, names in value['names'].items()},
                         mapping('action_to_verb'), mapping('action_to_noun'),
                         str(value['source']))
    except ValueError as error:
        raise ValueError(f'{path}: {error}') from None


def check_labels(clip_id: str, labels: Mapping[str, int], classes: ClassMaps) -> None:
    """ValueError naming the clip when a label's head is not in `classes` or its index is
    out of range."""
    for head, index in labels.items():
        if head not in classes.names:
            raise ValueError(f'clip {clip_id!r}: label {head!r} has no classes in '
                             f'{CLASSES_NAME} (heads: {list(classes.names)})')
        if not 0 <= int(index) < classes.num_classes(head):
            raise ValueError(f'clip {clip_id!r}: labels[{head}] = {index} is outside '
                             f'0..{classes.num_classes(head) - 1}')


def with_labels(src_dir, dst_dir, labels_by_clip_id: Mapping[str, Mapping[str, int]],
                classes: ClassMaps,
                captions_by_clip_id: Mapping[str, Sequence[tuple[str, float]]] | None = None,
                producer: dict | None = None) -> dict:
    """Copies the dataset `src_dir` into the new directory `dst_dir` with the label block
    added: `labels_by_clip_id[clip_id]` ({head: class index}) and, when given,
    `captions_by_clip_id[clip_id]` ((text, relevancy) pairs) replace each clip's labels and
    captions. Frames and every other field are kept as stored (JPEG bytes copied, not
    re-encoded); the format, shard size, name and fps are the source's. Writes
    `dst_dir/classes.json`; returns the new manifest. A clip missing from
    `labels_by_clip_id` (or from `captions_by_clip_id` when given), or a label outside
    `classes`, is a ValueError naming the clip id, and nothing is left in `dst_dir`."""
    source = open_dataset(src_dir)
    manifest = source.manifest or {}
    shard_sizes = [len(shard) for shard in source.shards]
    format = manifest.get('format') or next(
        (name for name, ext in FORMATS.items() if source.shards
         and source.shards[0].path.endswith(ext)), 'tfrecord')
    writer = DatasetWriter(
        dst_dir, name=manifest.get('name', 'clips'),
        records_per_shard=max(shard_sizes, default=1), format=format,
        producer=producer or {'command': 'with_labels', 'source': os.fspath(src_dir),
                              'source_producer': manifest.get('producer')},
        fps=manifest.get('fps'))
    try:
        for index in range(len(source)):
            clip = source.decode(index)
            clip_id = clip['clip_id']
            if clip_id not in labels_by_clip_id:
                raise ValueError(f'clip {clip_id!r} (record {index} of {source.directory}) '
                                 'has no entry in the label table')
            labels = {head: int(value) for head, value in labels_by_clip_id[clip_id].items()}
            check_labels(clip_id, labels, classes)
            clip['labels'] = labels
            if captions_by_clip_id is not None:
                if clip_id not in captions_by_clip_id:
                    raise ValueError(f'clip {clip_id!r} (record {index} of '
                                     f'{source.directory}) has no entry in the caption table')
                pairs = list(captions_by_clip_id[clip_id])
                clip['captions'] = [text for text, _ in pairs]
                clip['caption_relevancy'] = np.asarray([rel for _, rel in pairs], np.float32)
            writer.add(clip)
    except BaseException:
        writer.abort()
        raise
    return close_with_classes(writer, classes)


def close_with_classes(writer: DatasetWriter, classes: ClassMaps) -> dict:
    """Writes `classes.json`, then closes `writer` (the manifest comes last: its presence
    still means the dataset is complete); returns the manifest."""
    try:
        write_classes(writer.out_dir, classes)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
