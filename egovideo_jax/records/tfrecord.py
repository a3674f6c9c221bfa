"""TFRecord files without TensorFlow: framing with masked CRC32C, atomic shard writing, and
random access through a sidecar offset index.

Framing of one record (all integers little-endian):

    uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)` over CRC32C (Castagnoli),
the format `tf.data.TFRecordDataset` reads and writes.

Sidecar index `SHARD.index` (version 1), written atomically together with the shard:

    | bytes  | type         | field                                                       |
    | ------ | ------------ | ----------------------------------------------------------- |
    | 0..7   | 8 bytes      | magic `b'EVJTFIDX'`                                         |
    | 8..11  | uint32       | index format version (1)                                    |
    | 12..15 | uint32       | reserved, 0                                                 |
    | 16..23 | uint64       | record count n                                              |
    | 24..31 | uint64       | shard size in bytes when indexed (detects a stale index)   |
    | 32..   | uint64 x n   | byte offset of each record's length field, increasing      |

Record i spans `[offset[i], offset[i + 1])` (the last one ends at the shard size), so a reader
fetches it, CRCs included, with one positioned read. A shard without an index (written by
another tool) is indexed in memory by one scan of its length headers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

import google_crc32c
import numpy as np

from egovideo_jax.io.atomic import (
    AbortOnError,
    fsync_directory,
    publish,
    remove_quietly,
    temp_path_for,
    write_all,
)

INDEX_SUFFIX = '.index'
INDEX_MAGIC = b'EVJTFIDX'
INDEX_VERSION = 1
_INDEX_HEADER = struct.Struct('<8sIIQQ')
_LENGTH = struct.Struct('<Q')
_CRC = struct.Struct('<I')
_HEADER_BYTES = _LENGTH.size + _CRC.size  # length + its CRC
_FRAMING_BYTES = _HEADER_BYTES + _CRC.size
_MASK_DELTA = 0xA282EAD8


class RecordError(ValueError):
    """A record that cannot be read: names the shard file, the record index (-1 when the
    problem is not one record's, e.g. a stale index file) and what is wrong."""

    def __init__(self, shard: str, index: int, reason: str):
        self.shard = os.fspath(shard)
        self.index = index
        self.reason = reason
        where = f'record {index}' if index >= 0 else 'shard'
        super().__init__(f'{self.shard}: {where}: {reason}')

    def __reduce__(self):  # keeps the attributes when raised in a worker process
        return type(self), (self.shard, self.index, self.reason)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """What a finished shard writer reports (and the manifest records)."""
    path: str
    num_records: int
    num_bytes: int
    sha256: str


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """The framed bytes of one record, exactly as they appear in the file."""
    data = bytes(data)
    length = _LENGTH.pack(len(data))
    return b''.join((length, _CRC.pack(masked_crc32c(length)), data,
                     _CRC.pack(masked_crc32c(data))))


def index_path(shard_path) -> str:
    return os.fspath(shard_path) + INDEX_SUFFIX


def encode_index(offsets: Iterable[int], shard_bytes: int) -> bytes:
    offsets = np.asarray(list(offsets), dtype='<u8')
    return (_INDEX_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, 0, len(offsets), shard_bytes)
            + offsets.tobytes())


def read_index(shard_path) -> np.ndarray:
    """The record offsets from `SHARD.index`; RecordError (index -1) when the index is
    malformed or does not describe the shard as it is now."""
    shard, path = os.fspath(shard_path), index_path(shard_path)
    with open(path, 'rb') as file:
        data = file.read()

    def fail(reason):
        raise RecordError(shard, -1, f'index file {path}: {reason}; delete it to re-index '
                                     'the shard by scanning')

    if len(data) < _INDEX_HEADER.size:
        fail(f'{len(data)} bytes is shorter than the {_INDEX_HEADER.size}-byte header')
    magic, version, _, count, shard_bytes = _INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC:
        fail(f'bad magic {magic!r}, expected {INDEX_MAGIC!r}')
    if version != INDEX_VERSION:
        fail(f'index version {version}, this reader supports {INDEX_VERSION}')
    if len(data) != _INDEX_HEADER.size + 8 * count:
        fail(f'{len(data)} bytes for {count} offsets, expected {_INDEX_HEADER.size + 8 * count}')
    actual_bytes = os.path.getsize(shard)
    if shard_bytes != actual_bytes:
        fail(f'stale: indexed a {shard_bytes}-byte shard, the shard has {actual_bytes} bytes')
    offsets = np.frombuffer(data, dtype='<u8', offset=_INDEX_HEADER.size).astype(np.int64)
    if count and (offsets[0] != 0 or np.any(np.diff(offsets) < _FRAMING_BYTES)
                  or offsets[-1] + _FRAMING_BYTES > shard_bytes):
        fail('offsets are not increasing record starts inside the shard')
    return offsets


def scan_offsets(path) -> np.ndarray:
    """Offsets of every record, found by reading only the length headers (their CRCs are
    checked, so a corrupt length cannot send the scan astray). A truncated tail or a corrupt
    header raises RecordError naming the record."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    offsets = []
    position = 0
    with open(path, 'rb') as file:
        while position < size:
            index = len(offsets)
            header = file.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                raise RecordError(path, index, f'truncated: {size - position} bytes left at '
                                               f'offset {position}, a record header needs '
                                               f'{_HEADER_BYTES}')
            length_bytes = header[:_LENGTH.size]
            if _CRC.unpack_from(header, _LENGTH.size)[0] != masked_crc32c(length_bytes):
                raise RecordError(path, index, f'length CRC mismatch at offset {position}')
            end = position + _FRAMING_BYTES + _LENGTH.unpack(length_bytes)[0]
            if end > size:
                raise RecordError(path, index, f'truncated: the record needs bytes up to '
                                               f'{end}, the file has {size}')
            offsets.append(position)
            position = end
            file.seek(position)
    return np.asarray(offsets, dtype=np.int64)


def unframe_record(buffer: bytes, *, shard: str, index: int, verify_crc: bool = True) -> bytes:
    """The data of one framed record that fills `buffer` exactly."""
    if len(buffer) < _FRAMING_BYTES:
        raise RecordError(shard, index, f'truncated: {len(buffer)} bytes, a record needs at '
                                        f'least {_FRAMING_BYTES}')
    length = _LENGTH.unpack_from(buffer)[0]
    if length + _FRAMING_BYTES != len(buffer):
        raise RecordError(shard, index, f'length field says {length} data bytes, the record '
                                        f'spans {len(buffer) - _FRAMING_BYTES}')
    data = bytes(buffer[_HEADER_BYTES:_HEADER_BYTES + length])
    if verify_crc:
        if _CRC.unpack_from(buffer, _LENGTH.size)[0] != masked_crc32c(buffer[:_LENGTH.size]):
            raise RecordError(shard, index, 'length CRC mismatch')
        if _CRC.unpack_from(buffer, _HEADER_BYTES + length)[0] != masked_crc32c(data):
            raise RecordError(shard, index, 'data CRC mismatch')
    return data


class TFRecordShardWriter(AbortOnError):
    """Streams framed records into a temporary file beside `path`; `close()` publishes the
    shard and its index under their final names, `abort()` (or an exception inside a `with`
    block) leaves no file behind."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._temp_path = temp_path_for(self.path)
        self._file = open(self._temp_path, 'wb')
        self._digest = hashlib.sha256()
        self._offsets: list[int] = []
        self._position = 0

    def __len__(self) -> int:
        return len(self._offsets)

    def write(self, record: bytes) -> None:
        framed = frame_record(record)
        self._file.write(framed)
        self._digest.update(framed)
        self._offsets.append(self._position)
        self._position += len(framed)

    def close(self) -> ShardInfo:
        self._file.close()
        index_temp_path = temp_path_for(index_path(self.path))
        try:
            with open(index_temp_path, 'wb') as file:
                file.write(encode_index(self._offsets, self._position))
            # An old index must never describe the new shard, not even between two renames.
            remove_quietly(index_path(self.path))
            publish(self._temp_path, self.path)
            publish(index_temp_path, index_path(self.path))
        except BaseException:
            remove_quietly(index_temp_path)
            self.abort()
            raise
        return ShardInfo(self.path, len(self._offsets), self._position, self._digest.hexdigest())

    def abort(self) -> None:
        self._file.close()
        remove_quietly(self._temp_path)


def write_shard(path, records: Iterable[bytes]) -> int:
    """Writes `records` as one TFRecord shard plus its index, atomically; returns the count."""
    return write_all(TFRecordShardWriter(path), records)


def publish_shard_as(shard_path, final_path) -> None:
    """Renames a finished shard and its index (DatasetWriter learns final names at close)."""
    remove_quietly(index_path(final_path))
    os.replace(shard_path, final_path)
    os.replace(index_path(shard_path), index_path(final_path))
    fsync_directory(os.path.dirname(os.fspath(final_path)))


class IndexedTFRecord:
    """Random access to one TFRecord shard: `len()`, `read(i)` (one `os.pread`, both CRCs
    checked unless `verify_crc=False`), iteration.

    Picklable for Grain workers: the offsets travel with it, the file is reopened lazily in
    each process.
    """

    def __init__(self, path, verify_crc: bool = True):
        self.path = os.fspath(path)
        self.verify_crc = verify_crc
        self._fd = None  # opened on first read, once per process
        self._fd_pid = None
        if not os.path.exists(self.path):
            raise FileNotFoundError(f'TFRecord shard {self.path} does not exist')
        self.has_index_file = os.path.exists(index_path(self.path))
        offsets = read_index(self.path) if self.has_index_file else scan_offsets(self.path)
        self._bounds = np.append(offsets, os.path.getsize(self.path))

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @property
    def offsets(self) -> np.ndarray:
        return self._bounds[:-1]

    def read(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f'{self.path}: record {index} is out of range; the shard has '
                             f'{len(self)} records')
        start, end = int(self._bounds[index]), int(self._bounds[index + 1])
        buffer = os.pread(self._file_descriptor(), end - start, start)
        if len(buffer) != end - start:
            raise RecordError(self.path, index, f'truncated: expected {end - start} bytes at '
                                                f'offset {start}, read {len(buffer)}')
        return unframe_record(buffer, shard=self.path, index=index, verify_crc=self.verify_crc)

    def __getitem__(self, index: int) -> bytes:
        return self.read(index)

    def __iter__(self) -> Iterator[bytes]:
        for index in range(len(self)):
            yield self.read(index)

    def _file_descriptor(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._fd_pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # in a forked child this closes only the child's copy

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down `os` already
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_fd'] = state['_fd_pid'] = None
        return state

    def __repr__(self) -> str:
        return f'IndexedTFRecord({self.path!r}, records={len(self)})'


def verify_tfrecord_shard(path) -> list[str]:
    """Every problem found in one shard: unreadable framing, index disagreeing with a scan,
    CRC mismatches (all records are read)."""
    path = os.fspath(path)
    try:
        scanned = scan_offsets(path)
    except RecordError as error:
        return [str(error)]
    problems = []
    if os.path.exists(index_path(path)):
        try:
            indexed = read_index(path)
            if not np.array_equal(indexed, scanned):
                problems.append(f'{path}: index file {index_path(path)} lists {len(indexed)} '
                                f'records, a scan finds {len(scanned)} at different offsets')
        except RecordError as error:
            problems.append(str(error))
    bounds = np.append(scanned, os.path.getsize(path))
    with open(path, 'rb') as file:
        for index in range(len(scanned)):
            file.seek(int(bounds[index]))
            buffer = file.read(int(bounds[index + 1] - bounds[index]))
            try:
                unframe_record(buffer, shard=path, index=index)
            except RecordError as error:
                problems.append(str(error))
    return problems
