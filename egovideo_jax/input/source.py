"""Grain random-access source over a directory of HOD clip record shards."""
from __future__ import annotations

import os
from typing import NamedTuple

from egovideo_jax.records import dataset


class ClipRecord(NamedTuple):
    """One serialised clip and where it came from, so later errors can name it."""
    index: int  # global record index in the dataset
    shard: str  # shard file path
    shard_index: int  # record index inside the shard
    data: bytes


class ClipRecordSource:
    """`grain.sources.RandomAccessDataSource` of `ClipRecord`s: one positioned read per
    record (TFRecord or ArrayRecord shards, whichever the dataset holds).

    Picklable for Grain worker processes; reads raise `RecordError` naming shard and record.
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self._dataset = dataset.open_dataset(self.directory)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> ClipRecord:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f'{self.directory}: record {index} is out of range; the dataset '
                             f'has {len(self)} records')
        shard, shard_index = self._dataset.locate(index)
        return ClipRecord(index, os.fspath(shard), int(shard_index), self._dataset.read(index))

    def __repr__(self) -> str:  # Grain uses it to check a restored state matches the source
        return f'ClipRecordSource({self.directory!r}, records={len(self)})'
