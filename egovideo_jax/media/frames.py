"""Frame reading for evaluation: seek instead of decoding long videos from their start.

EPIC-KITCHENS videos run for up to an hour and each of the 9668 test clips is a few seconds
somewhere inside one; `input.video.read_frames` decodes from frame 0 every time. Here the
reader seeks to the keyframe before the first wanted frame and numbers the decoded frames by
their timestamps, which is exact for constant-frame-rate video (EPIC, EGTEA and the Ego4D
chunks all are). When the numbering cannot be trusted (no timestamps, or the seek landed past
the wanted frames) it falls back to decoding from the start.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import av
import numpy as np

from egovideo_jax.media.transforms import normalize, resize_short_side_center_crop
from egovideo_jax.media.video import read_frames


def _decode_from_seek(path, wanted: set[int]) -> dict[int, np.ndarray] | None:
    """Frames `wanted` keyed by index, or None when timestamps cannot number the frames."""
    first, last = min(wanted), max(wanted)
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f'{path}: no video stream')
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        rate, time_base = stream.average_rate, stream.time_base
        if not rate or not time_base:
            return None
        origin = stream.start_time or 0
        if first > 0:
            container.seek(origin + int(first / (rate * time_base)), stream=stream,
                           backward=True)
        decoded = {}
        for frame in container.decode(stream):
            if frame.pts is None:
                return None
            index = round((frame.pts - origin) * time_base * rate)
            if not decoded and index > first:
                return None  # the seek overshot: frames before `index` are unreachable here
            if index in wanted:
                decoded[index] = frame.to_ndarray(format='rgb24')
            if index >= last:
                break
    return decoded if len(decoded) == len(wanted) else None


def read_frames_seeking(path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 RGB `[len(indices), H, W, 3]`, frame `indices[i]` (0-based) at i, like
    `input.video.read_frames`, decoding only from the keyframe before the first one."""
    indices = np.asarray(indices, np.int64)
    if indices.size == 0 or indices.min() < 0:
        return read_frames(path, indices)  # it raises the errors for these
    try:
        decoded = _decode_from_seek(path, set(indices.tolist()))
    except av.error.FFmpegError as error:
        raise ValueError(f'cannot read video {path}: {error}') from error
    if decoded is None:
        return read_frames(path, indices)
    return np.stack([decoded[index] for index in indices.tolist()])


def preprocess(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> float32 `[T, size, size, 3]`: short-side bicubic resize, centre
    crop, CLIP normalisation (the spec's evaluation transform)."""
    return normalize(np.stack([resize_short_side_center_crop(frame, size) for frame in frames]))


def read_clips(path, index_sets: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """One preprocessed clip per index set, all decoded in one pass over `path`."""
    frames = preprocess(read_frames_seeking(path, np.concatenate(index_sets)), size)
    return np.split(frames, np.cumsum([len(s) for s in index_sets])[:-1])
