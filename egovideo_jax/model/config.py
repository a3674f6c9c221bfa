"""Model hyper-parameters and the named variants (B/16, L/14-336 and tiny ones for tests/demo)."""
from __future__ import annotations

import dataclasses

from egovideo_jax.io.choices import check_choice

MODES = ('single', 'slowfast')


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_dim: int
    num_frames: int = 4  # T0: length of the temporal position table
    ln_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
    width: int
    heads: int
    layers: int
    vocab_size: int = 49408
    context_length: int = 77
    ln_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class EgoVideoConfig:
    vision: VisionConfig
    text: TextConfig
    embed_dim: int = 512
    mode: str = 'single'  # 'single': one 4-frame branch; 'slowfast': + 16-frame adapter branch
    fast_frames: int = 16
    adapter_ratio: float = 0.5
    variant: str = ''  # the VARIANTS name it was built from (set by get_model_config)

    def __post_init__(self):
        check_choice(self.mode, MODES, 'mode')
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(f'image_size {self.vision.image_size} is not a multiple of '
                             f'patch_size {self.vision.patch_size}')


VARIANTS: dict[str, EgoVideoConfig] = {
    'B/16': EgoVideoConfig(
        VisionConfig(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_dim=3072),
        TextConfig(width=512, heads=8, layers=12)),
    'L/14-336': EgoVideoConfig(
        VisionConfig(image_size=336, patch_size=14, width=1024, layers=24, heads=16,
                     mlp_dim=4096),
        TextConfig(width=768, heads=12, layers=12)),
    # Same code path at toy widths: unit tests and quick CPU runs.
    'tiny': EgoVideoConfig(
        VisionConfig(image_size=32, patch_size=16, width=64, layers=2, heads=4, mlp_dim=128),
        TextConfig(width=64, heads=4, layers=2), embed_dim=32),
    # Small enough to co-train on a CPU in minutes, big enough to learn the demo actions.
    'demo': EgoVideoConfig(
        VisionConfig(image_size=64, patch_size=16, width=128, layers=4, heads=4, mlp_dim=512),
        TextConfig(width=128, heads=4, layers=4), embed_dim=128),
}


def get_model_config(variant: str = 'B/16', mode: str = 'single', num_frames: int = 4,
                     **overrides) -> EgoVideoConfig:
    """The named variant in `mode`, with a `num_frames`-long temporal table.

    `overrides` replace top-level fields (e.g. `fast_frames=8`).
    """
    check_choice(variant, VARIANTS, 'variant')
    base = VARIANTS[variant]
    vision = dataclasses.replace(base.vision, num_frames=num_frames)
    return dataclasses.replace(base, vision=vision, mode=mode, variant=variant, **overrides)
