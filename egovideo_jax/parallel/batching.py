"""Global batches on the device mesh from each host's local slice."""
from __future__ import annotations

import collections
import json
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from egovideo_jax.parallel.sharding import BATCH_AXES


def batch_axes(mesh: Mesh, data_axes: Sequence[str] = BATCH_AXES) -> tuple[str, ...]:
    """The mesh axes that split the batch: those of `data_axes` the mesh has.

    Leaving absent axes out lets the same call serve a data-only mesh; at least one must
    exist, else the batch would silently be replicated.
    """
    present = tuple(axis for axis in data_axes if axis in mesh.axis_names)
    if not present:
        raise ValueError(f'none of the batch axes {tuple(data_axes)} is in the mesh, whose axes '
                         f'are {mesh.axis_names}')
    return present


def global_batch(local_batch: dict, mesh: Mesh,
                 data_axes: Sequence[str] = BATCH_AXES) -> dict:
    """Each leaf of this host's `local_batch` (leading axis: local examples) becomes one
    global `jax.Array` whose leading axis is `process_count` times longer, sharded over
    `data_axes`. dtypes follow jax's canonicalisation (int64 -> int32 without x64)."""
    axes = batch_axes(mesh, data_axes)
    sharding = NamedSharding(mesh, PartitionSpec(axes))
    shards = int(np.prod([mesh.shape[axis] for axis in axes]))
    global_size = None

    def to_global(path, leaf):
        nonlocal global_size
        leaf = np.asarray(leaf)
        name = jax.tree_util.keystr(path)
        if leaf.ndim == 0:
            raise ValueError(f'batch field {name} is a scalar; every field needs a batch axis')
        size = leaf.shape[0] * jax.process_count()
        if global_size is not None and size != global_size:
            raise ValueError(f'batch field {name} has {leaf.shape[0]} local examples, other '
                             f'fields have {global_size // jax.process_count()}')
        global_size = size
        if size % shards:
            raise ValueError(f'batch field {name}: global batch {size} is not divisible by the '
                             f'{shards} shards of mesh axes {axes}')
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree_util.tree_map_with_path(to_global, local_batch)


class DevicePrefetcher:
    """Global batches put on the mesh `size` steps ahead of the step that takes them, so the
    host-to-device copy of batch n+1 overlaps step n instead of sitting on the step path.

    Checkpointing sees the data position of the batches handed out, not of those prefetched:
    `get_state()` is the wrapped iterator's state right after the last batch `__next__`
    returned (as JSON bytes, the form Grain's Orbax handler stores for non-Grain iterators;
    its files restore into the plain Grain iterator too), so a resumed run continues exactly
    where the saved one stopped."""

    def __init__(self, iterator, to_device, size: int = 1):
        if size < 1:
            raise ValueError(f'device prefetch size: expected at least 1, got {size}')
        self.iterator, self.to_device, self.size = iterator, to_device, size
        self._queue: collections.deque = collections.deque()
        self._state = iterator.get_state()

    def __iter__(self):
        return self

    def __next__(self):
        while len(self._queue) < self.size + 1:
            try:
                local = next(self.iterator)
            except StopIteration:
                break
            self._queue.append((self.to_device(local), self.iterator.get_state()))
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.popleft()
        return batch

    def state(self) -> dict:
        """The wrapped iterator's state as of the last batch handed out."""
        return self._state

    def get_state(self) -> bytes:
        return json.dumps(self._state, indent=4).encode()

    def set_state(self, state: bytes):
        self._queue.clear()
        self._state = json.loads(state)
        self.iterator.set_state(self._state)

    def start_prefetch(self):
        """Grain's handler calls this after a restore; batches are fetched on demand."""
