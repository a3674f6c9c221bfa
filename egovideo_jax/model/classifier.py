"""`VideoClassifier`: an EgoVideo backbone with linear classification heads (fine-tuning).

The video feature is the backbone's unnormalised video embedding (`encode_video(...,
normalize=False)`: the slow/fast projection for slowfast models, the visual projection for
single-branch ones), as in LaViLa / AVION's fine-tuning, followed by dropout and one
`nn.Dense` per head (e.g. verb / noun / action). The backbone's text tower is created at
initialisation but never called in training, so the parameters under `backbone` stay a whole
EgoVideo: the zero-shot evaluators and the PyTorch export read them as they are.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.egovideo import EgoVideo, dummy_inputs

Dtype = jnp.dtype


class VideoClassifier(nn.Module):
    config: EgoVideoConfig
    heads: Sequence[tuple[str, int]]  # ((name, classes), ...), e.g. (('verb', 97), ...)
    dropout: float = 0.5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat_policy: str | None = None
    attention: str = 'auto'

    def setup(self):
        if not self.heads:
            raise ValueError('VideoClassifier needs at least one head')
        self.backbone = EgoVideo(self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                                 scan_layers=self.scan_layers, remat_policy=self.remat_policy,
                                 attention=self.attention)
        self.head_dropout = nn.Dropout(self.dropout)
        self.classifiers = {name: nn.Dense(classes, dtype=jnp.float32,
                                           param_dtype=self.param_dtype, name=f'head_{name}')
                            for name, classes in self.heads}

    def __call__(self, video, fast=None, *, train: bool = False) -> dict:
        """{head: float32 logits [B, classes]}; dropout (rng 'dropout') only when `train`."""
        if self.is_initializing():  # the text tower's parameters, so the backbone is whole
            _, tokens, _ = dummy_inputs(self.config)
            self.backbone.encode_text(tokens)
        feature = self.backbone.encode_video(video, fast, normalize=False)
        feature = self.head_dropout(feature.astype(jnp.float32), deterministic=not train)
        return {name: head(feature) for name, head in self.classifiers.items()}

    def example_inputs(self) -> tuple:
        """Zero (video, fast or None) inputs for `init`."""
        video, _, fast = dummy_inputs(self.config)
        return video, fast
