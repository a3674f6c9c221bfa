"""A Flax EgoVideo with its parameters: random initialisation and jit-compiled embedding of
videos and text (what evaluators, the trainer's evaluations and the public API run)."""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.egovideo import EgoVideo, dummy_inputs
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


class Encoder:
    """A built EgoVideo with its parameters: embeds videos and text."""

    def __init__(self, config: EgoVideoConfig, params, dtype=jnp.float32,
                 module: EgoVideo | None = None):
        """`module`: the Flax module to run (e.g. the trainer's, with its attention, scanned
        layers and dtype; `params` then in its layout); default an unrolled float32 one."""
        if module is not None and module.config != config:
            raise ValueError(f'{type(self).__name__}: module.config differs from config')
        self.config = config
        self.params = params
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
