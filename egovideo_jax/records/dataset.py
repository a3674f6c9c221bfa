"""Dataset directories: clip records in shards plus `manifest.json`.

Layout written by `DatasetWriter` (ArrayRecord shards end in `.array_record`, no index):

    DIR/clips-00000-of-00004.tfrecord   + .index    shards of up to records_per_shard clips
    ...
    DIR/clips-00003-of-00004.tfrecord   + .index
    DIR/manifest.json                                written last: its presence means complete

`manifest.json` (version 1):

    {"manifest_version": 1, "schema_version": 1, "name": "clips", "format": "tfrecord",
     "num_records": 1000,
     "shards": [{"file": "clips-00000-of-00004.tfrecord", "num_records": 256,
                 "num_bytes": 123456, "sha256": "..."}, ...],
     "frames_per_clip": 32,            # an int, or the sorted distinct counts when mixed
     "frame_sizes": [[256, 341]],      # distinct [height, width] of the stored frames
     "min_short_side": 256,
     "fps": 30.0,                      # frame rate of the source videos, null if unknown
     "narration_fields": ["text/narration"],   # text features non-empty in some clip
     "label_fields": ["labels/verb", "labels/noun", "labels/action", "captions/text"],
                                       # label block features in some clip ([] without)
     "caption_counts": {"stored": 1234, "distinct": 321},
                                       # captions over all clips, and distinct texts among
                                       # them (absent in manifests written before it)
     "producer": {...},                # the command and config that wrote the dataset
     "created_utc": "2025-01-01T00:00:00Z"}

Labelled datasets also hold `classes.json` (the class names behind the label indices;
`egovideo_jax/records/classes.py`), written beside the manifest by the label converters.

`open_dataset` also reads a directory of TFRecord (or ArrayRecord) shards without a manifest,
e.g. another tool's output; TFRecord shards without an index are indexed by one scan.
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import re
from collections.abc import Iterator

import numpy as np

from egovideo_jax.io.atomic import (
    AbortOnError,
    fsync_directory,
    remove_quietly,
    sha256_file,
    write_json_atomically,
)
from egovideo_jax.io.choices import check_choice
from egovideo_jax.records import arrayrecord, schema, tfrecord
from egovideo_jax.records.tfrecord import RecordError

MANIFEST_NAME = 'manifest.json'
MANIFEST_VERSION = 1
LABEL_FIELDS = tuple(f'labels/{name}' for name in schema.LABEL_NAMES) + ('captions/text',)
FORMATS = {'tfrecord': '.tfrecord', 'arrayrecord': '.array_record'}
_SHARD_NAME = re.compile(r'^(?P<name>.+)-(?P<shard>\d{5})-of-(?P<total>\d{5})(?P<ext>\.[a-z_]+)$')
# Our names and TFDS-style names (`mnist-train.tfrecord-00000-of-00001`).
_FOREIGN_SHARD = {
    'tfrecord': re.compile(r'\.tfrecord(-\d+-of-\d+)?$'),
    'arrayrecord': re.compile(r'\.array_record(-\d+-of-\d+)?$'),
}


def shard_file_name(name: str, shard: int, num_shards: int, format: str) -> str:
    return f'{name}-{shard:05d}-of-{num_shards:05d}{FORMATS[format]}'


def _shard_writer(path, format: str):
    if format == 'tfrecord':
        return tfrecord.TFRecordShardWriter(path)
    return arrayrecord.ArrayRecordShardWriter(path)


def _open_shard(path, format: str, verify_crc: bool = True):
    if format == 'tfrecord':
        return tfrecord.IndexedTFRecord(path, verify_crc=verify_crc)
    return arrayrecord.IndexedArrayRecord(path)


class DatasetWriter(AbortOnError):
    """Writes clip dicts into shards of `records_per_shard` and, at `close()`, gives the
    shards their final `NAME-KKKKK-of-NNNNN` names and writes the manifest.

    Full shards are published under hidden `.partial` names as soon as they fill (so memory
    stays bounded); `abort()`, or an exception inside a `with` block, removes them and leaves
    no final-named file. Set `fps` before closing when the source frame rate becomes known.
    """

    def __init__(self, out_dir, name: str = 'clips', records_per_shard: int = 256,
                 format: str = 'tfrecord', producer: dict | None = None,
                 fps: float | None = None):
        check_choice(format, FORMATS, 'format')
        if records_per_shard < 1:
            raise ValueError(f'records_per_shard must be >= 1, got {records_per_shard}')
        self.out_dir = os.fspath(out_dir)
        self.name, self.format = name, format
        self.records_per_shard = records_per_shard
        self.producer = dict(producer or {})
        self.fps = fps
        os.makedirs(self.out_dir, exist_ok=True)
        existing = _existing_dataset_files(self.out_dir, name)
        if existing:
            raise FileExistsError(f'{self.out_dir} already holds a dataset ({existing[0]}); '
                                  'write to an empty directory')
        self._finished: list[tfrecord.ShardInfo] = []
        self._writer = None
        self._frame_counts: collections.Counter = collections.Counter()
        self._frame_sizes: set[tuple[int, int]] = set()
        self._narration_fields: set[str] = set()
        self._label_fields: set[str] = set()
        self._captions_stored = 0
        self._distinct_captions: set[str] = set()
        self._closed = False

    def __len__(self) -> int:
        return sum(info.num_records for info in self._finished) + (
            len(self._writer) if self._writer else 0)

    def add(self, clip: dict) -> None:
        if self._closed:
            raise ValueError(f'DatasetWriter({self.out_dir}) is closed')
        record = schema.encode_clip(clip)
        frame_size = schema.jpeg_size(clip['frames_jpeg'][0])
        if self._writer is None:
            partial_name = f'.{self.name}-{len(self._finished):05d}{FORMATS[self.format]}.partial'
            self._writer = _shard_writer(os.path.join(self.out_dir, partial_name), self.format)
        self._writer.write(record)
        self._frame_counts[len(clip['frames_jpeg'])] += 1
        self._frame_sizes.add(frame_size)
        if clip['narration']:
            self._narration_fields.add('text/narration')
        if clip['hod']:
            self._narration_fields.add('text/hod')
        self._label_fields.update(f'labels/{name}' for name in clip.get('labels') or {})
        if clip.get('captions'):
            self._label_fields.add('captions/text')
            self._captions_stored += len(clip['captions'])
            self._distinct_captions.update(clip['captions'])
        if len(self._writer) == self.records_per_shard:
            self._finished.append(self._writer.close())
            self._writer = None

    def close(self) -> dict:
        """Publishes every shard under its final name, then the manifest; returns it."""
        if self._closed:
            raise ValueError(f'DatasetWriter({self.out_dir}) is already closed')
        self._closed = True
        if self._writer is not None:
            self._finished.append(self._writer.close())
            self._writer = None
        shards = []
        for shard, info in enumerate(self._finished):
            file_name = shard_file_name(self.name, shard, len(self._finished), self.format)
            final = os.path.join(self.out_dir, file_name)
            if self.format == 'tfrecord':
                tfrecord.publish_shard_as(info.path, final)
            else:
                os.replace(info.path, final)
            shards.append({'file': file_name, 'num_records': info.num_records,
                           'num_bytes': info.num_bytes, 'sha256': info.sha256})
        fsync_directory(self.out_dir)
        manifest = self._manifest(shards)
        write_json_atomically(os.path.join(self.out_dir, MANIFEST_NAME), manifest)
        return manifest

    def _manifest(self, shards: list[dict]) -> dict:
        counts = sorted(self._frame_counts)
        return {
            'manifest_version': MANIFEST_VERSION,
            'schema_version': schema.SCHEMA_VERSION,
            'name': self.name,
            'format': self.format,
            'num_records': sum(shard['num_records'] for shard in shards),
            'shards': shards,
            'frames_per_clip': counts[0] if len(counts) == 1 else counts,
            'frame_sizes': [list(size) for size in sorted(self._frame_sizes)],
            'min_short_side': min((min(size) for size in self._frame_sizes), default=None),
            'fps': self.fps,
            'narration_fields': [field for field in schema.NARRATION_FEATURES
                                 if field in self._narration_fields],
            'label_fields': [field for field in LABEL_FIELDS if field in self._label_fields],
            'caption_counts': {'stored': self._captions_stored,
                               'distinct': len(self._distinct_captions)},
            'producer': self.producer,
            'created_utc': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%dT%H:%M:%SZ'),
        }

    def abort(self) -> None:
        """Removes everything written so far; no manifest, no final-named shard."""
        self._closed = True
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        for info in self._finished:
            remove_quietly(info.path)
            remove_quietly(tfrecord.index_path(info.path))
        self._finished = []


def _existing_dataset_files(directory: str, name: str) -> list[str]:
    def is_ours(entry):
        match = _SHARD_NAME.match(entry)
        return bool(match) and match['name'] == name and match['ext'] in FORMATS.values()

    return sorted(entry for entry in os.listdir(directory)
                  if entry == MANIFEST_NAME or is_ours(entry))


class ClipDataset:
    """Random access over all shards of a dataset directory, in manifest (or file name)
    order: `len()`, `read(i)` / `ds[i]` (serialised Example), `decode(i)` (clip dict),
    `locate(i)`. Picklable, so it can be a Grain `RandomAccessDataSource`.

    `manifest` is None for a directory of shards without one.
    """

    def __init__(self, directory: str, manifest: dict | None, shards: list):
        self.directory = directory
        self.manifest = manifest
        self.shards = shards
        self._starts = np.cumsum([0] + [len(shard) for shard in shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, global_index: int) -> tuple[int, int]:
        if not 0 <= global_index < len(self):
            raise IndexError(f'{self.directory}: record {global_index} is out of range; the '
                             f'dataset has {len(self)} records')
        shard = int(np.searchsorted(self._starts, global_index, side='right')) - 1
        return shard, int(global_index - self._starts[shard])

    def locate(self, global_index: int) -> tuple[str, int]:
        """`(shard_path, local_index)` of a record."""
        shard, local = self._locate(global_index)
        return self.shards[shard].path, local

    def read(self, global_index: int) -> bytes:
        shard, local = self._locate(global_index)
        return self.shards[shard].read(local)

    def __getitem__(self, global_index: int) -> bytes:
        return self.read(global_index)

    def decode(self, global_index: int) -> dict:
        shard, local = self._locate(global_index)
        return schema.decode_clip(self.shards[shard].read(local),
                                  shard=self.shards[shard].path, index=local)

    def __iter__(self) -> Iterator[bytes]:
        for shard in self.shards:
            yield from shard

    def verify(self, check_schema: bool = True) -> list[str]:
        return verify_dataset(self.directory, check_schema=check_schema)

    def __repr__(self) -> str:
        return f'ClipDataset({self.directory!r}, shards={len(self.shards)}, records={len(self)})'


def read_manifest(directory) -> dict:
    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    try:
        with open(path, encoding='utf-8') as file:
            manifest = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: not valid JSON: {error}') from error
    for key in ('format', 'shards', 'schema_version'):
        if key not in manifest:
            raise ValueError(f'{path}: missing field {key!r}')
    if manifest['schema_version'] != schema.SCHEMA_VERSION:
        raise ValueError(f'{path}: schema_version {manifest["schema_version"]}, this reader '
                         f'supports {schema.SCHEMA_VERSION}')
    check_choice(manifest['format'], FORMATS, f'{path}: format')
    return manifest


def _manifest_problems(directory: str, manifest: dict) -> list[str]:
    """Disagreements between the manifest's shard list and the shard files in the
    directory (checked without opening any shard)."""
    path = os.path.join(directory, MANIFEST_NAME)
    listed = [shard['file'] for shard in manifest['shards']]
    problems = [f'{path} lists shard {os.path.join(directory, file)}, which does not exist'
                for file in listed if not os.path.exists(os.path.join(directory, file))]
    for file in listed:
        match = _SHARD_NAME.match(file)
        if match and int(match['total']) != len(listed):
            problems.append(f'{path} lists {len(listed)} shards, but shard {file} is one of '
                            f'{int(match["total"])}')
            break
    extension = FORMATS[manifest['format']]
    unlisted = sorted(entry for entry in os.listdir(directory)
                      if (match := _SHARD_NAME.match(entry)) and match['ext'] == extension
                      and match['name'] == manifest.get('name') and entry not in listed)
    if unlisted:
        problems.append(f'{path} lists {len(listed)} shards; the directory also holds '
                        f'{", ".join(unlisted)}')
    return problems


def _discover_shards(directory: str) -> tuple[str, list[str]]:
    """`(format, paths)` of the shards in a directory without a manifest."""
    found = {format: sorted(os.path.join(directory, entry) for entry in os.listdir(directory)
                            if pattern.search(entry) and not entry.startswith('.'))
             for format, pattern in _FOREIGN_SHARD.items()}
    present = [format for format, paths in found.items() if paths]
    if not present:
        raise FileNotFoundError(f'{directory}: no {MANIFEST_NAME} and no *.tfrecord or '
                                '*.array_record shards')
    if len(present) > 1:
        raise ValueError(f'{directory}: no {MANIFEST_NAME}, and both TFRecord and ArrayRecord '
                         'shards; cannot tell which form the dataset')
    return present[0], found[present[0]]


def open_dataset(directory, verify_crc: bool = True) -> ClipDataset:
    """Opens a dataset directory (see the module docstring). Raises FileNotFoundError for a
    missing directory, manifest-listed shard or an empty directory, ValueError for a
    manifest that disagrees with the shards, RecordError for an unreadable shard."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'dataset directory {directory} does not exist')
    if not os.path.exists(os.path.join(directory, MANIFEST_NAME)):
        format, paths = _discover_shards(directory)
        return ClipDataset(directory, None, [_open_shard(path, format, verify_crc)
                                             for path in paths])
    manifest = read_manifest(directory)
    problems = _manifest_problems(directory, manifest)
    if problems:
        missing = [problem for problem in problems if problem.endswith('does not exist')]
        raise (FileNotFoundError if missing else ValueError)('; '.join(problems))
    shards = []
    for entry in manifest['shards']:
        shard = _open_shard(os.path.join(directory, entry['file']), manifest['format'],
                            verify_crc)
        if len(shard) != entry['num_records']:
            raise ValueError(f'{shard.path}: {MANIFEST_NAME} says {entry["num_records"]} '
                             f'records, the shard has {len(shard)}')
        shards.append(shard)
    return ClipDataset(directory, manifest, shards)


def verify_dataset(directory, check_schema: bool = True) -> list[str]:
    """Every problem found: manifest vs directory, checksums, record counts, framing and
    CRCs of every record, index files, and (with `check_schema`) each record's schema.
    Works on damaged datasets that `open_dataset` refuses."""
    directory = os.fspath(directory)
    if not os.path.exists(os.path.join(directory, MANIFEST_NAME)):
        try:
            format, paths = _discover_shards(directory)
        except (FileNotFoundError, ValueError) as error:
            return [str(error)]
        return [problem for path in paths
                for problem in _verify_shard(path, format, None, check_schema)]
    try:
        manifest = read_manifest(directory)
    except ValueError as error:
        return [str(error)]
    problems = _manifest_problems(directory, manifest)
    for entry in manifest['shards']:
        path = os.path.join(directory, entry['file'])
        if os.path.exists(path):
            problems += _verify_shard(path, manifest['format'], entry, check_schema)
    return problems


def _verify_shard(path: str, format: str, entry: dict | None, check_schema: bool) -> list[str]:
    problems = []
    if entry is not None and sha256_file(path) != entry.get('sha256'):
        problems.append(f'{path}: sha256 differs from {MANIFEST_NAME}')
    verify = (tfrecord.verify_tfrecord_shard if format == 'tfrecord'
              else arrayrecord.verify_array_record_shard)
    framing_problems = verify(path)
    if framing_problems:
        return problems + framing_problems
    try:
        shard = _open_shard(path, format)
    except RecordError as error:
        return problems + [str(error)]
    if entry is not None and len(shard) != entry['num_records']:
        problems.append(f'{path}: {MANIFEST_NAME} says {entry["num_records"]} records, the '
                        f'shard has {len(shard)}')
    if check_schema:
        for index, record in enumerate(shard):
            try:
                schema.decode_clip(record, shard=path, index=index)
            except RecordError as error:
                problems.append(str(error))
    return problems
