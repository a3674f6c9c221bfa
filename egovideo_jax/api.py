"""The user-facing entry point: `load()` a model from any supported checkpoint, embed, export."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from egovideo_jax.convert import flax_io, torch_io, weights
from egovideo_jax.convert.checkpoints import load_params
from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.model.encoder import Encoder


class EgoVideoModel(Encoder):
    """A built EgoVideo with its parameters: embed videos and text (`Encoder`), export
    weights; `report` says what `load` did with every checkpoint key."""

    def __init__(self, config: EgoVideoConfig, params, report: weights.ImportReport | None = None,
                 dtype=jnp.float32, module: EgoVideo | None = None):
        super().__init__(config, params, dtype=dtype, module=module)
        self.report = report

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
    config, params, report = load_params(checkpoint, variant, mode, num_frames, seed)
    if verbose and report is not None:
        print(f'{checkpoint}: {report.summary()}')
    return EgoVideoModel(config, params, report, dtype=dtype)
