"""Reading and writing PyTorch `.pt` and safetensors files without unpickling objects.

torch is only needed for `.pt` files (install `requirements-test.txt`); safetensors files are
read and written with numpy alone.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np

SAFETENSORS_SUFFIXES = ('.safetensors',)
TORCH_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt')


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError('reading/writing .pt files needs PyTorch: '
                          'pip install -r requirements-test.txt (torch==2.13.0, CPU)') from error
    return torch


def _tensor_to_numpy(tensor) -> np.ndarray:
    torch = _torch()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat `{key: array}` from a `.pt`-style file (a bare state dict or a container with
    `state_dict` / `model`) or a `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import load_file
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f'{path} is not a readable safetensors file: {error}') from error
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f'{path}: unknown checkpoint format {path.suffix!r}; expected one of '
                         f'{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}')
    torch = _torch()
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f'refusing to load {path}: it holds Python objects other than tensors '
                         f'and plain containers, and loading it would run arbitrary code '
                         f'(weights_only=True refused it: {str(error).splitlines()[0]})') from error
    for container_key in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and isinstance(obj.get(container_key), Mapping):
            obj = obj[container_key]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path} holds a {type(obj).__name__}, not a state dict')
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor')
        state[key] = _tensor_to_numpy(value)
    return state


def write_torch(path: str | os.PathLike, state: Mapping[str, np.ndarray], epoch: int = 0):
    """The reference container: `{'epoch': int, 'state_dict': {'module.' + key: tensor}}`."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f'module.{k}': torch.from_numpy(np.array(v, order='C')) for k, v in state.items()}
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'epoch': int(epoch), 'state_dict': tensors}, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the final name


def write_safetensors(path: str | os.PathLike, state: Mapping[str, np.ndarray]):
    """Reference keys without `module.`, float32."""
    from safetensors.numpy import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    save_file({k: np.array(v, order='C') for k, v in state.items()}, str(tmp),
              metadata={'format': 'egovideo-reference'})
    os.replace(tmp, path)
