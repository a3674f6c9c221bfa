"""Device mesh and logical-axis sharding rules.

The mesh has three axes: `data` (pure data parallelism: parameters replicated), `fsdp` (data
parallelism with parameters, gradients and optimizer state sharded along `embed`) and
`tensor` (Megatron-style: heads, MLP hidden, adapter bottleneck and vocabulary split). The
batch is split over `data` x `fsdp`. Each model parameter carries logical axis names
(egovideo_jax/model/transformer.py); `LOGICAL_AXIS_RULES` maps them to mesh axes. A mesh axis
is used at most once per array, so `embed` of activations (whose batch already uses `fsdp`)
stays unsharded.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ('batch', BATCH_AXES),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('adapter', 'tensor'),
    ('adapter_in', 'fsdp'),  # so no large adapter weight stays whole under fsdp
    ('fusion', 'fsdp'),
    ('vocab', 'tensor'),
    ('kv', None),
    ('patch', None),
    ('proj', None),
    ('length', None),
    ('layers', None),
)


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolves one `-1` entry to fill the devices; checks the product."""
    shape = [int(sizes[axis]) for axis in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f'config.mesh: at most one axis may be -1, got {dict(sizes)}')
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if num_devices % known:
            raise ValueError(f'config.mesh {dict(sizes)}: {num_devices} devices are not '
                             f'divisible by {known}')
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(f'config.mesh {dict(zip(MESH_AXES, shape))} needs '
                         f'{math.prod(shape)} devices, {num_devices} are available')
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def logical_shardings(logical_specs, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
