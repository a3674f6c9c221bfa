"""Frame reading for evaluation: seek instead of decoding long videos from their start.

EPIC-KITCHENS videos run for up to an hour and each of the 9668 test clips is a few seconds
somewhere inside one; `media.video.read_frames` decodes from frame 0 every time. Here the
reader seeks to the keyframe before the first wanted frame and numbers the decoded frames by
their timestamps, which is exact for constant-frame-rate video (EPIC, EGTEA and the Ego4D
chunks all are). When the numbering cannot be trusted (no timestamps, or the seek landed past
the wanted frames) it falls back to decoding from the start.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.media.video import open_video, read_frames


def _decode_from_seek(path, wanted: set[int]) -> dict[int, np.ndarray] | None:
    """Frames `wanted` keyed by index, or None when timestamps cannot number the frames."""
    first, last = min(wanted), max(wanted)
    with open_video(path) as (container, stream):
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
    `media.video.read_frames`, decoding only from the keyframe before the first one."""
    indices = np.asarray(indices, np.int64)
    if indices.size == 0 or indices.min() < 0:
        return read_frames(path, indices)  # it raises the errors for these
    decoded = _decode_from_seek(path, set(indices.tolist()))
    if decoded is None:
        return read_frames(path, indices)
    return np.stack([decoded[index] for index in indices.tolist()])


def read_clips(path, index_sets: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """One preprocessed clip per index set, all decoded in one pass over `path`."""
    frames = eval_transform(read_frames_seeking(path, np.concatenate(index_sets)), size)
    return np.split(frames, np.cumsum([len(s) for s in index_sets])[:-1])
