"""Training augmentation: random resized crop, horizontal flip, and what a flip means for
the narration and the hand tracks.

A flip mirrors the scene, so the left hand becomes the right hand: with `swap_sides` the text
and the per-hand tracks follow the pixels. The reference flips pixels only; passing
`swap_sides=False` reproduces it.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
from PIL import Image

from egovideo_jax.media import transforms


class CropBox(NamedTuple):
    """A crop in pixels: rows `[top, top + height)`, columns `[left, left + width)`."""
    top: int
    left: int
    height: int
    width: int


def random_resized_crop_params(height: int, width: int, rng: np.random.Generator,
                               scale: tuple[float, float] = (0.5, 1.0),
                               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> CropBox:
    """torchvision's `RandomResizedCrop.get_params` on a `height x width` image.

    Ten tries at an area fraction in `scale` and a log-uniform aspect ratio (w / h) in
    `ratio`; if none fits, the largest centred crop whose ratio is clamped into `ratio`.
    """
    if height < 1 or width < 1:
        raise ValueError(f'image must be non-empty, got {height}x{width}')
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f'scale and ratio must be positive (low, high) pairs, '
                         f'got scale={scale}, ratio={ratio}')
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return CropBox(top, left, crop_height, crop_width)
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_width, crop_height = int(round(height * max(ratio))), height
    else:
        crop_width, crop_height = width, height
    return CropBox((height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width)


def resized_crop(frames: np.ndarray, crop: CropBox, size: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> uint8 `[T, size, size, 3]`: the same crop of every frame,
    then a bicubic resize (crop first, as torchvision does on PIL images)."""
    _check_frames(frames)
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        patch = frame[crop.top:crop.top + crop.height, crop.left:crop.left + crop.width]
        out[t] = np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BICUBIC))
    return out


def random_resized_crop(frames: np.ndarray, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """One random crop shared by all frames of `frames` (uint8 `[T, H, W, 3]`), resized to
    `size x size`."""
    _check_frames(frames)
    crop = random_resized_crop_params(frames.shape[1], frames.shape[2], rng, scale, ratio)
    return resized_crop(frames, crop, size)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Evaluation view: short side resized to `size` (bicubic), then the centre square."""
    _check_frames(frames)
    return np.stack([transforms.resize_short_side_center_crop(frame, size) for frame in frames])


def hflip(frames: np.ndarray) -> np.ndarray:
    """Mirrors `[..., H, W, C]` frames left to right."""
    return np.ascontiguousarray(frames[..., ::-1, :])


_SIDE_WORD = re.compile(r'\b(left|right)\b', re.IGNORECASE)
_OPPOSITE_SIDE = {'left': 'right', 'right': 'left'}


def _opposite_side(match: re.Match) -> str:
    word = match.group(0)
    opposite = _OPPOSITE_SIDE[word.lower()]
    if word.isupper():
        return opposite.upper()
    if word[0].isupper():
        return opposite.capitalize()
    return opposite


def swap_sides(text: str) -> str:
    """Swaps the whole words `left` and `right` (also inside `left-hand`), keeping their case.

    Words that merely contain a side (`leftover`, `upright`) are untouched. Idioms such as
    "right away" are swapped too: narrations rarely use them and a rule cannot tell.
    """
    return _SIDE_WORD.sub(_opposite_side, text)


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f'expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}')
