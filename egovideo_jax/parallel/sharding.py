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

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
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
    """The (data, fsdp, tensor) mesh. On TPUs the devices are laid out along the chips'
    physical interconnect (`mesh_utils`); over several slices (multi-slice, joined by the
    data-centre network) the `data` axis spans the slices, so only the gradient all-reduce
    crosses the slow links."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    num_slices = len({getattr(device, 'slice_index', 0) or 0 for device in devices})
    if num_slices > 1:
        if shape[0] % num_slices:
            raise ValueError(f'config.mesh.data={shape[0]} must be a multiple of the '
                             f'{num_slices} slices: data parallelism spans the slices')
        per_slice = (shape[0] // num_slices, *shape[1:])
        grid = mesh_utils.create_hybrid_device_mesh(per_slice, (num_slices, 1, 1), devices,
                                                    allow_split_physical_axes=True)
    elif devices[0].platform == 'tpu' and _one_device_per_chip(devices):
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    else:  # CPUs, GPUs, and TPU cores listed separately (e.g. compile-only v4 topologies)
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def cores_per_device_chip(devices: Sequence[jax.Device]) -> int:
    """How many JAX devices share one chip (and its HBM): 1, except for TPU v4 cores listed
    one by one rather than as one megacore device per chip."""
    return 1 + max(getattr(device, 'core_on_chip', 0) or 0 for device in devices)


def _one_device_per_chip(devices: Sequence[jax.Device]) -> bool:
    return cores_per_device_chip(devices) == 1


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
