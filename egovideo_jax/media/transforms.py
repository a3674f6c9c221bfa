"""Evaluation-time frame transforms: short-side resize + centre crop, CLIP normalisation."""
from __future__ import annotations

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def normalize(frames: np.ndarray) -> np.ndarray:
    """CLIP-normalises `[..., 3]` pixels: uint8 in [0, 255] or floats already in [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim == 0 or frames.shape[-1] != 3:
        raise ValueError(f'normalize expects RGB pixels [..., 3], got shape {frames.shape}')
    if frames.dtype == np.uint8:
        pixels = frames.astype(np.float32) / 255.0
    else:
        pixels = frames.astype(np.float32)
    return (pixels - CLIP_MEAN) / CLIP_STD


def resize_short_side_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[H, W, 3]` -> uint8 `[size, size, 3]`: bicubic resize of the short side to
    `size`, then the centre `size x size` crop.

    Output sizes and crop offsets follow torchvision's `Resize(int)` and `CenterCrop`.
    """
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f'expected a uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}')
    if size < 1:
        raise ValueError(f'crop size must be >= 1, got {size}')
    height, width = frame.shape[:2]
    if height <= width:
        new_height, new_width = size, int(size * width / height)
    else:
        new_height, new_width = int(size * height / width), size
    image = Image.fromarray(frame)
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    return np.asarray(image)[top:top + size, left:left + size]


def eval_transform(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> float32 `[T, size, size, 3]`: the evaluation transform
    (short-side bicubic resize, centre crop, CLIP normalisation) of every frame."""
    return normalize(np.stack([resize_short_side_center_crop(frame, size) for frame in frames]))
