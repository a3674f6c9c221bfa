"""Flax EgoVideo parameters <-> reference (PyTorch-layout) state dicts, as numpy arrays."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util

from egovideo_jax.convert import mapping
from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.layout import is_scanned, stack_layers, unstack_layers


@dataclasses.dataclass
class ImportReport:
    """What an import did with every key: nothing is dropped without being listed here."""
    loaded: list[str]            # reference keys copied into the model
    new: list[str]               # Flax parameters the checkpoint lacks (kept at their init)
    unused_by_reference: list[str]  # keys the reference builds but its forward never reads
    unexpected: list[str]        # keys this model has no place for (e.g. a different mode)
    source_format: str = 'reference'

    def summary(self) -> str:
        lines = [f'{self.source_format} checkpoint: {len(self.loaded)} loaded, '
                 f'{len(self.new)} new (left at initialisation), '
                 f'{len(self.unused_by_reference)} unused by the reference forward, '
                 f'{len(self.unexpected)} unexpected']
        for title, keys in (('new', self.new), ('unexpected', self.unexpected)):
            if keys:
                shown = ', '.join(keys[:8]) + (f', ... ({len(keys) - 8} more)'
                                               if len(keys) > 8 else '')
                lines.append(f'  {title}: {shown}')
        return '\n'.join(lines)


def _flat(params: Mapping[str, Any]) -> dict[tuple[str, ...], np.ndarray]:
    if is_scanned(params):
        params = unstack_layers(params)
    return {path: np.asarray(jax.device_get(leaf), np.float32)
            for path, leaf in traverse_util.flatten_dict(dict(params)).items()}


def to_reference_state(params: Mapping[str, Any], config: EgoVideoConfig
                       ) -> dict[str, np.ndarray]:
    """Flax params (either layer layout) -> reference keys (no `module.`), float32 numpy.

    Keys the reference builds but never uses (adapter_2, conv2d) are written as zeros so the
    reference loads the file with strict=True.
    """
    flat = _flat(params)
    state = {}
    for entry in mapping.reference_entries(config):
        missing = [p for p in entry.flax_paths if p not in flat]
        if missing:
            raise KeyError(f'parameter {"/".join(missing[0])} (for {entry.torch_key}) is not in '
                           f'the given params: do they belong to a {config.mode} model of '
                           f'this variant?')
        # np.array, not ascontiguousarray: the latter turns 0-d (logit_scale) into 1-d.
        state[entry.torch_key] = np.array(
            entry.transform.to_torch([flat[p] for p in entry.flax_paths]), order='C')
    for key, shape in mapping.unused_reference_shapes(config).items():
        state[key] = np.zeros(shape, np.float32)
    return state


def from_reference_state(state: Mapping[str, Any], config: EgoVideoConfig,
                         init_params: Mapping[str, Any]
                         ) -> tuple[dict[str, Any], ImportReport]:
    """Reference / OpenAI-CLIP state dict -> Flax params in `init_params`' layout.

    Parameters the checkpoint lacks keep their value from `init_params` and are reported as
    new; keys with no place in the model are reported. A shape mismatch is an error that names
    the key and both shapes.
    """
    source_format = 'OpenAI CLIP' if mapping.is_openai_clip(
        {k.removeprefix('module.'): v for k, v in state.items()}) else 'reference'
    canonical = mapping.canonicalize({k: np.asarray(v) for k, v in state.items()})
    flat = _flat(init_params)
    loaded, new, consumed = [], [], set()
    for entry in mapping.reference_entries(config):
        if entry.torch_key not in canonical:
            new.extend('/'.join(p) for p in entry.flax_paths)
            continue
        value = canonical[entry.torch_key]
        expected = entry.transform.to_torch([flat[p] for p in entry.flax_paths]).shape
        if tuple(value.shape) != tuple(expected):
            raise ValueError(f'checkpoint key {entry.torch_key!r} has shape {tuple(value.shape)}, '
                             f'the model expects {tuple(expected)} '
                             f'(variant/resolution/frames mismatch?)')
        for path, array in zip(entry.flax_paths,
                               entry.transform.to_flax(np.asarray(value, np.float32))):
            flat[path] = np.array(array, order='C').astype(flat[path].dtype)
        loaded.append(entry.torch_key)
        consumed.add(entry.torch_key)
    known_unused = set(mapping.unused_reference_shapes(
        dataclasses.replace(config, mode='slowfast')))
    leftovers = sorted(set(canonical) - consumed)
    report = ImportReport(
        loaded=loaded, new=new,
        unused_by_reference=[k for k in leftovers if k in known_unused],
        unexpected=[k for k in leftovers if k not in known_unused],
        source_format=source_format)
    params = traverse_util.unflatten_dict(flat)
    if is_scanned(init_params):
        params = stack_layers(params)
    return params, report
