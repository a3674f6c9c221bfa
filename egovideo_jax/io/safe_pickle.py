"""Read a numpy array from a pickle without running anything else a pickle can ask for.

A pickle names the callables that rebuild its objects, so `pickle.load` on a downloaded
file can run arbitrary code. `load_array` admits only what numpy needs to rebuild an
ndarray (written by numpy 1.x or 2.x, pickle protocols 2-5) and refuses everything else,
naming the file and the refused global.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle

import numpy as np

try:  # numpy >= 2 keeps the implementations in numpy._core
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric


class UnsafePickleError(ValueError):
    pass


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Python 3 writes bytes into protocol-2 pickles as `_codecs.encode(text, 'latin1')`."""
    if encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(f'_codecs.encode with encoding {encoding!r}')
    return codecs.encode(text, 'latin1')


_ALLOWED = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _latin1_encode,
}
for _package in ('numpy.core', 'numpy._core'):  # files written by numpy 1.x name numpy.core
    _ALLOWED[(f'{_package}.multiarray', '_reconstruct')] = _multiarray._reconstruct
    _ALLOWED[(f'{_package}.numeric', '_frombuffer')] = _numeric._frombuffer


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        # latin1: lets numpy read the raw bytes of arrays pickled by Python 2.
        super().__init__(file, encoding='latin1')
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f'{self._path}: refusing to unpickle {module}.{name}: only numpy arrays are '
                'allowed in this file') from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f'{self._path}: refusing a persistent id: only numpy arrays '
                                'are allowed in this file')


def load_array(path: str | os.PathLike) -> np.ndarray:
    """The numpy array pickled in `path`; anything else is refused with `UnsafePickleError`."""
    with open(path, 'rb') as file:
        data = file.read()
    try:
        array = _ArrayUnpickler(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated or garbled: say which file
        raise UnsafePickleError(f'{path}: not a readable pickle of a numpy array: {error}') \
            from error
    if not isinstance(array, np.ndarray):
        raise UnsafePickleError(f'{path}: holds a {type(array).__name__}, expected a numpy array')
    if array.dtype.hasobject:  # its elements would be arbitrary Python objects
        raise UnsafePickleError(f'{path}: holds an array of Python objects ({array.dtype}); '
                                'expected numbers')
    return array
