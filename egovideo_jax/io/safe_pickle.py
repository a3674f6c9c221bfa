"""Restricted unpickling: read a pickle without running anything it asks for beyond a fixed
table of allowed globals.

A pickle names the callables that rebuild its objects, so `pickle.load` on a downloaded
file can run arbitrary code. `load_restricted` admits only the globals of the table it is
given and refuses everything else (and persistent ids), naming the file and the refused
global. Two tables are kept here: `ARRAY_GLOBALS` (what numpy 1.x or 2.x needs to rebuild an
ndarray, pickle protocols 2-5; `load_array`) and `BYTES_GLOBALS` (what protocols 0-2 need to
spell bytes; EPIC-KITCHENS-100 detection pickles, a list of bytes).
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from collections.abc import Callable, Mapping

import numpy as np

try:  # numpy >= 2 keeps the implementations in numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

Globals = Mapping[tuple[str, str], Callable]


class UnsafePickleError(ValueError):
    pass


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Python 3 writes bytes into protocol 0-2 pickles as `_codecs.encode(text, 'latin1')`;
    this stand-in can do nothing else."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError('_codecs.encode is admitted only as str -> latin1 bytes')
    return codecs.encode(text, 'latin1')


def _empty_bytes(*args) -> bytes:
    """Protocols 0-2 spell `b''` as `bytes()`; with arguments `bytes` could be more."""
    if args:
        raise pickle.UnpicklingError('bytes() is admitted only without arguments')
    return b''


ARRAY_GLOBALS: dict[tuple[str, str], Callable] = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _latin1_encode,
}
for _package in ('numpy.core', 'numpy._core'):  # files written by numpy 1.x name numpy.core
    ARRAY_GLOBALS[(f'{_package}.multiarray', '_reconstruct')] = _multiarray._reconstruct
    ARRAY_GLOBALS[(f'{_package}.numeric', '_frombuffer')] = _numeric._frombuffer

BYTES_GLOBALS: dict[tuple[str, str], Callable] = {
    ('_codecs', 'encode'): _latin1_encode,
    ('__builtin__', 'bytes'): _empty_bytes,
    ('builtins', 'bytes'): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, allowed: Globals, contents: str):
        # latin1: lets numpy read the raw bytes of arrays pickled by Python 2.
        super().__init__(file, encoding='latin1')
        self._path, self._allowed, self._contents = path, allowed, contents

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f'{self._path}: refusing to unpickle {module}.{name}: only {self._contents} '
                'are allowed in this file') from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f'{self._path}: refusing a persistent id: only '
                                f'{self._contents} are allowed in this file')


def load_restricted(path: str | os.PathLike, allowed: Globals, contents: str) -> object:
    """The object pickled in `path`, built with no global but those of `allowed`;
    `contents` says what the file may hold ('numpy arrays') for the messages. A refused or
    unreadable pickle raises `UnsafePickleError` naming the file."""
    with open(path, 'rb') as file:
        data = file.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, allowed, contents).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated or garbled: say which file
        raise UnsafePickleError(f'{path}: not a readable pickle of {contents}: {error}') \
            from error


def load_array(path: str | os.PathLike) -> np.ndarray:
    """The numpy array pickled in `path`; anything else is refused with `UnsafePickleError`."""
    array = load_restricted(path, ARRAY_GLOBALS, 'numpy arrays')
    if not isinstance(array, np.ndarray):
        raise UnsafePickleError(f'{path}: holds a {type(array).__name__}, expected a numpy array')
    if array.dtype.hasobject:  # its elements would be arbitrary Python objects
        raise UnsafePickleError(f'{path}: holds an array of Python objects ({array.dtype}); '
                                'expected numbers')
    return array
