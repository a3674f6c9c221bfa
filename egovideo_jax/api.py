"""The user-facing entry point: `load()` a model from any supported checkpoint and embed."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from egovideo_jax.convert import flax_io, mapping, torch_io, weights
from egovideo_jax.model.config import EgoVideoConfig, get_model_config
from egovideo_jax.model.egovideo import EgoVideo, dummy_inputs
from egovideo_jax.model.layout import is_scanned, stack_layers, unstack_layers
from egovideo_jax.model.tokenizer import tokenize


@functools.lru_cache(maxsize=None)
def _compiled_init(config: EgoVideoConfig, scan_layers: bool):
    return jax.jit(EgoVideo(config, scan_layers=scan_layers).init)


def init_params(config: EgoVideoConfig, seed: int = 0, scan_layers: bool = False):
    """Randomly initialised parameters (plain arrays, logical-axis boxes removed)."""
    variables = _compiled_init(config, scan_layers)(jax.random.PRNGKey(seed),
                                                    *dummy_inputs(config))
    return nn.unbox(variables['params'])


@functools.lru_cache(maxsize=None)
def _compiled_encoders(module: EgoVideo):
    """jit-compiled (encode_video, encode_text), shared by every model of this module."""
    encode_video = jax.jit(lambda params, video, fast: module.apply(
        {'params': params}, video, fast, method=EgoVideo.encode_video))
    encode_text = jax.jit(lambda params, tokens: module.apply(
        {'params': params}, tokens, method=EgoVideo.encode_text))
    return encode_video, encode_text


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


class EgoVideoModel:
    """A built EgoVideo with its parameters: embed videos and text, export weights."""

    def __init__(self, config: EgoVideoConfig, params, report: weights.ImportReport | None = None,
                 dtype=jnp.float32, module: EgoVideo | None = None):
        """`module`: the Flax module to run (e.g. the trainer's, with its attention, scanned
        layers and dtype; `params` then in its layout); default an unrolled float32 one."""
        if module is not None and module.config != config:
            raise ValueError('EgoVideoModel: module.config differs from config')
        self.config = config
        self.params = params
        self.report = report
        self.module = module or EgoVideo(config, dtype=dtype)
        self._encode_video, self._encode_text = _compiled_encoders(self.module)

    def encode_video(self, video, fast=None) -> np.ndarray:
        """single: `encode_video(frames)`; slowfast: `encode_video(slow, fast)`.

        Frames `[B, T, H, W, 3]` float, CLIP-normalised. Returns L2-normalised `[B, embed]`.
        """
        if self.config.mode == 'slowfast' and fast is None:
            raise ValueError('this is a slowfast model: call encode_video(slow, fast) with '
                             f'{self.config.vision.num_frames} slow and '
                             f'{self.config.fast_frames} fast frames')
        if self.config.mode == 'single' and fast is not None:
            raise ValueError("this is a single-branch model: call encode_video(frames)")
        return np.asarray(self.encode_video_array(video, fast))

    def encode_video_array(self, video, fast=None) -> jax.Array:
        """`encode_video` without the copy to the host: a `jax.Array` sharded like the
        batch (on several hosts, global inputs from `jax.make_array_from_process_local_data`
        give a global output)."""
        if not isinstance(video, jax.Array):
            video = jnp.asarray(video, jnp.float32)
        if fast is not None and not isinstance(fast, jax.Array):
            fast = jnp.asarray(fast, jnp.float32)
        return self._encode_video(self.params, video, fast)

    def encode_text(self, texts: str | Sequence[str] | np.ndarray) -> np.ndarray:
        """Strings (tokenised with CLIP BPE) or int tokens `[B, 77]` -> L2-normalised `[B, embed]`."""
        if isinstance(texts, str) or (isinstance(texts, Sequence) and texts
                                      and isinstance(texts[0], str)):
            tokens = tokenize(texts, self.config.text.context_length)
        else:
            tokens = np.asarray(texts, np.int32)
        return np.asarray(self._encode_text(self.params, jnp.asarray(tokens)))

    def reference_state(self) -> dict[str, np.ndarray]:
        """Parameters in the reference PyTorch key layout (no `module.` prefix)."""
        return weights.to_reference_state(self.params, self.config)

    def export_torch(self, path: str | os.PathLike, epoch: int = 0):
        torch_io.write_torch(path, self.reference_state(), epoch)

    def export_safetensors(self, path: str | os.PathLike):
        torch_io.write_safetensors(path, self.reference_state())

    def save(self, directory: str | os.PathLike):
        """Our own checkpoint (Orbax params + metadata), readable by `load(directory)`."""
        flax_io.write_params(directory, self.params, variant=self.config.variant,
                             mode=self.config.mode,
                             num_frames=self.config.vision.num_frames)


def load(checkpoint: str | os.PathLike | None = None, variant: str = 'B/16',
         mode: str = 'slowfast', num_frames: int = 4, seed: int = 0,
         dtype=jnp.float32, verbose: bool = True) -> EgoVideoModel:
    """Builds EgoVideo `variant` in `mode` and loads `checkpoint`:

    - a reference `.pt` (`{'state_dict': {'module.' + key: ...}}`, either naming) or a bare
      state dict, an OpenAI CLIP state dict, a `.safetensors` file, or
    - one of our Orbax checkpoints (a directory),
    - or None: random initialisation from `seed`.

    `num_frames` is the length of the temporal position table (T0); a checkpoint's own table
    length wins. The import report (loaded / new / unused keys) is printed unless
    `verbose=False` and kept as `.report`.
    """
    config = get_model_config(variant, mode, num_frames)
    if checkpoint is None:
        return EgoVideoModel(config, init_params(config, seed), dtype=dtype)
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
    if verbose:
        print(f'{path}: {report.summary()}')
    return EgoVideoModel(config, params, report, dtype=dtype)
