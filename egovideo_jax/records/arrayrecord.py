"""ArrayRecord shards (the random-access format Grain reads natively), through the
`array_record` module that grain ships, behind the same interface as `IndexedTFRecord`.

ArrayRecord keeps its own index and checksums inside the file, so no sidecar is needed.
Shards are written with `group_size:1` (one record per chunk): each record is a whole clip,
and random access should not decompress neighbours.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from egovideo_jax.io.atomic import (
    AbortOnError,
    publish,
    remove_quietly,
    sha256_file,
    temp_path_for,
    write_all,
)
from egovideo_jax.records.tfrecord import RecordError, ShardInfo

WRITER_OPTIONS = 'group_size:1'
RANDOM_ACCESS_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'


class ArrayRecordShardWriter(AbortOnError):
    """Like `TFRecordShardWriter`: a temporary file beside `path` until `close()`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._temp_path = temp_path_for(self.path)
        self._writer = ArrayRecordWriter(self._temp_path, WRITER_OPTIONS)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def write(self, record: bytes) -> None:
        self._writer.write(bytes(record))
        self._count += 1

    def close(self) -> ShardInfo:
        try:
            self._writer.close()
            info = ShardInfo(self.path, self._count, os.path.getsize(self._temp_path),
                             sha256_file(self._temp_path))
            publish(self._temp_path, self.path)
        except BaseException:
            remove_quietly(self._temp_path)
            raise
        return info

    def abort(self) -> None:
        if self._writer.is_open():
            self._writer.close()
        remove_quietly(self._temp_path)


def write_array_record_shard(path, records: Iterable[bytes]) -> int:
    """Writes `records` as one ArrayRecord shard, atomically; returns the count."""
    return write_all(ArrayRecordShardWriter(path), records)


class IndexedArrayRecord:
    """Random access to one ArrayRecord shard: `len()`, `read(i)`, iteration; picklable
    (the native reader is reopened lazily in each process)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._reader = None  # opened lazily, once per process
        self._reader_pid = None
        if not os.path.exists(self.path):
            raise FileNotFoundError(f'ArrayRecord shard {self.path} does not exist')
        self._length = self._open().num_records()

    def __len__(self) -> int:
        return self._length

    def read(self, index: int) -> bytes:
        if not 0 <= index < self._length:
            raise IndexError(f'{self.path}: record {index} is out of range; the shard has '
                             f'{self._length} records')
        try:
            return self._open().read([index])[0]
        except (RuntimeError, ValueError) as error:  # riegeli reports corruption this way
            raise RecordError(self.path, index, f'unreadable ArrayRecord: {error}') from error

    def __getitem__(self, index: int) -> bytes:
        return self.read(index)

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self._length):
            yield self.read(index)

    def _open(self) -> ArrayRecordReader:
        if self._reader is None or self._reader_pid != os.getpid():
            try:
                self._reader = ArrayRecordReader(self.path, RANDOM_ACCESS_OPTIONS)
            except (RuntimeError, ValueError) as error:
                raise RecordError(self.path, -1,
                                  f'not a readable ArrayRecord file: {error}') from error
            self._reader_pid = os.getpid()
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_reader'] = state['_reader_pid'] = None
        return state

    def __repr__(self) -> str:
        return f'IndexedArrayRecord({self.path!r}, records={self._length})'


def verify_array_record_shard(path) -> list[str]:
    """Problems found reading every record (ArrayRecord checks its own chunk hashes)."""
    try:
        shard = IndexedArrayRecord(path)
        for index in range(len(shard)):
            shard.read(index)
    except RecordError as error:
        return [str(error)]
    return []
