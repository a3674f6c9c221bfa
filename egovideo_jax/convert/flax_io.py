"""Our own parameter checkpoints: an Orbax PyTree in `DIR/params` plus `DIR/egovideo.json`.

`read_params` also takes the trainer's step directories (`WORKDIR/checkpoints/STEP`), whose
`state` item holds the parameters next to the optimizer state. The JSON names the variant,
mode and temporal table length the params belong to.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax

from egovideo_jax.io.atomic import write_json_atomically

METADATA_FILE = 'egovideo.json'


def write_params(directory: str | os.PathLike, params: Mapping[str, Any], *, variant: str,
                 mode: str, num_frames: int):
    import orbax.checkpoint as ocp
    directory = Path(directory).resolve()
    if (directory / 'params').exists():
        raise FileExistsError(f'{directory / "params"} exists; choose a new output directory')
    directory.mkdir(parents=True, exist_ok=True)
    ocp.PyTreeCheckpointer().save(directory / 'params', jax.device_get(dict(params)))
    write_json_atomically(directory / METADATA_FILE,
                          {'variant': variant, 'mode': mode, 'num_frames': num_frames})


def read_metadata(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_params(directory: str | os.PathLike) -> dict[str, Any]:
    """Params from one of our checkpoints: a directory with a `params` item (converter
    output), a trainer step directory (`WORKDIR/checkpoints/STEP`, whose `state` item holds
    the train state), or the item itself."""
    import orbax.checkpoint as ocp
    directory = Path(directory).resolve()
    target = next((directory / item for item in ('params', 'state')
                   if (directory / item).is_dir()), directory)
    try:
        restored = ocp.PyTreeCheckpointer().restore(target)
    except Exception as error:  # orbax raises several types for "not a checkpoint"
        raise ValueError(f'{directory} is not a readable Orbax checkpoint: {error}') from error
    if isinstance(restored, Mapping) and 'params' in restored:
        restored = restored['params']
    return dict(restored)
