"""The array-only unpickler: numpy arrays load, anything else is refused with the file named."""

import os
import pickle

import numpy as np
import pytest

from egovideo_jax.io.safe_pickle import UnsafePickleError, load_array


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
@pytest.mark.parametrize('array', [
    np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    np.array([[True, False]]),
])
def test_arrays_round_trip(tmp_path, protocol, array):
    path = tmp_path / 'array.pkl'
    path.write_bytes(pickle.dumps(array, protocol=protocol))
    loaded = load_array(path)
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'ran'
    path = tmp_path / 'caption_relevancy.pkl'
    path.write_bytes(pickle.dumps(RunsACommand(marker)))
    with pytest.raises(UnsafePickleError, match=rf'{path}: refusing to unpickle \w+\.system'):
        load_array(path)
    assert not marker.exists()


def test_array_nested_in_other_objects_is_refused(tmp_path):
    path = tmp_path / 'wrapped.pkl'
    path.write_bytes(pickle.dumps({'relevancy': np.eye(2)}))
    with pytest.raises(UnsafePickleError, match=rf'{path}: holds a dict'):
        load_array(path)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / 'objects.pkl'
    path.write_bytes(pickle.dumps(np.array(['a', 1], dtype=object)))
    with pytest.raises(UnsafePickleError, match=rf'{path}: holds an array of Python objects'):
        load_array(path)


def test_garbage_names_the_file(tmp_path):
    path = tmp_path / 'truncated.pkl'
    path.write_bytes(pickle.dumps(np.eye(3))[:40])
    with pytest.raises(UnsafePickleError, match=rf'{path}: not a readable pickle'):
        load_array(path)
