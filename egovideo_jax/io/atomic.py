"""Atomic file publication: write under a temporary name in the target directory, fsync,
then rename, so a reader sees either no file or the complete file."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any


def temp_path_for(path: str) -> str:
    """A unique hidden name beside `path` (same directory, so the rename stays atomic)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f'.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}')


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str) -> None:
    """Makes completed renames in `directory` durable (no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(directory or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp_path: str, final_path: str) -> None:
    """fsyncs `temp_path` and renames it to `final_path` (replacing any old file)."""
    fsync_path(temp_path)
    os.replace(temp_path, final_path)
    fsync_directory(os.path.dirname(os.fspath(final_path)))


def write_bytes_atomically(path: str, data: bytes) -> None:
    temp_path = temp_path_for(path)
    try:
        with open(temp_path, 'wb') as file:
            file.write(data)
        publish(temp_path, path)
    except BaseException:
        remove_quietly(temp_path)
        raise


def write_json_atomically(path: str | os.PathLike, value: Any, indent: int | None = 2) -> None:
    """`value` as JSON (UTF-8, a final newline) at `path`, all or nothing."""
    text = json.dumps(value, indent=indent) + '\n'
    write_bytes_atomically(os.fspath(path), text.encode('utf-8'))


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def sha256_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class AbortOnError:
    """Context-manager behaviour of our writers: `close()` on success, `abort()` (remove
    everything half-written) when the block raises."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_all(writer, records) -> int:
    """Writes every record through `writer` (an AbortOnError writer); returns the count."""
    with writer:
        for record in records:
            writer.write(record)
    return len(writer)
