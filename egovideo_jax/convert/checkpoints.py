"""Parameters from every checkpoint format we read: a reference `.pt` or bare state dict, an
OpenAI CLIP state dict, `.safetensors`, or our own Orbax directory (`flax_io`); with the
import report that lists what was loaded, left new and left unused."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from egovideo_jax.convert import flax_io, mapping, torch_io, weights
from egovideo_jax.model.config import EgoVideoConfig, get_model_config
from egovideo_jax.model.encoder import init_params
from egovideo_jax.model.layout import is_scanned, stack_layers, unstack_layers


def _merge_flax_params(loaded: Mapping[str, Any], init: Mapping[str, Any]
                       ) -> tuple[dict[str, Any], weights.ImportReport]:
    """Our own parameter tree onto `init` (matching layout), reporting what differs."""
    flat_init = traverse_util.flatten_dict(unstack_layers(init) if is_scanned(init) else dict(init))
    flat_loaded = traverse_util.flatten_dict(
        unstack_layers(loaded) if is_scanned(loaded) else dict(loaded))
    merged, loaded_keys, new = {}, [], []
    for path, value in flat_init.items():
        name = '/'.join(path)
        if path not in flat_loaded:
            merged[path] = value
            new.append(name)
            continue
        array = np.asarray(flat_loaded[path])
        if array.shape != value.shape:
            raise ValueError(f'checkpoint parameter {name} has shape {array.shape}, the model '
                             f'expects {value.shape}')
        merged[path] = array.astype(value.dtype)
        loaded_keys.append(name)
    unexpected = sorted('/'.join(p) for p in set(flat_loaded) - set(flat_init))
    params = traverse_util.unflatten_dict(merged)
    if is_scanned(init):
        params = stack_layers(params)
    return params, weights.ImportReport(loaded_keys, new, [], unexpected, 'egovideo-jax')


def load_params(checkpoint: str | os.PathLike | None, variant: str, mode: str,
                num_frames: int, seed: int = 0
                ) -> tuple[EgoVideoConfig, Any, weights.ImportReport | None]:
    """`(config, params, report)` for EgoVideo `variant` in `mode` from `checkpoint` (see
    `egovideo_jax.load`); None: random initialisation from `seed`, no report. A checkpoint's
    temporal table length wins over `num_frames`."""
    config = get_model_config(variant, mode, num_frames)
    if checkpoint is None:
        return config, init_params(config, seed), None
    path = Path(checkpoint)
    if path.is_dir():
        saved_for = flax_io.read_metadata(path)
        if saved_for and (saved_for['variant'], saved_for['mode']) != (variant, mode):
            raise ValueError(f"{path} holds a {saved_for['variant']} {saved_for['mode']} model; "
                             f'load it with variant={saved_for["variant"]!r}, '
                             f'mode={saved_for["mode"]!r} (asked for {variant!r}, {mode!r})')
        loaded = flax_io.read_params(path)
        temporal = loaded.get('visual', {}).get('temporal_embedding')
        if temporal is not None:
            config = get_model_config(variant, mode, int(np.shape(temporal)[0]))
        params, report = _merge_flax_params(loaded, init_params(config, seed))
    else:
        state = torch_io.read_state_dict(path)
        canonical = mapping.canonicalize(state)
        if 'visual.temporal_embedding' in canonical:
            config = get_model_config(variant, mode,
                                      canonical['visual.temporal_embedding'].shape[0])
        params, report = weights.from_reference_state(state, config, init_params(config, seed))
    return config, params, report
