"""Video decoding with PyAV and eval-time clip loading (sample, resize + crop, normalise).

`open_video` is the one place that opens a video file: every reader (here, the seeking
reader in `media.frames`, the record writer's `records.video_clips`) goes through it, so
they all fail the same way, with a `ValueError` naming the file."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import av
import numpy as np

from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.transforms import eval_transform


@contextlib.contextmanager
def open_video(path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Yields the container and its first video stream (multithreaded decoding); FFmpeg
    errors raised inside the block (opening, seeking, decoding) become `ValueError`s that
    name the file."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise ValueError(f'{path}: no video stream')
            stream = container.streams.video[0]
            stream.thread_type = 'AUTO'
            yield container, stream
    except av.error.FFmpegError as error:
        raise ValueError(f'cannot read video {path}: {error}') from error


def video_info(path) -> tuple[int, float]:
    """`(num_frames, fps)` of the first video stream; fps is 0.0 when the file does not say.

    Containers that do not record a frame count are counted by decoding.
    """
    with open_video(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        num_frames = stream.frames or sum(1 for _ in container.decode(stream))
    return num_frames, fps


def read_frames(path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 RGB `[len(indices), H, W, 3]`, frame `indices[i]` (0-based, decode order) at i.

    Decodes once from the start, up to the largest index; indices may repeat and come in
    any order.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f'{path}: frame indices must be a 1-D list of integers, '
                         f'got {indices.dtype} {indices.shape}')
    if indices.size and indices.min() < 0:
        raise ValueError(f'{path}: negative frame index {indices.min()}')
    wanted = set(indices.tolist())
    decoded = {}
    with open_video(path) as (container, stream):
        if not wanted:
            return np.zeros((0, stream.height, stream.width, 3), np.uint8)
        last = max(wanted)
        num_decoded = 0
        for frame in container.decode(stream):
            if num_decoded in wanted:
                decoded[num_decoded] = frame.to_ndarray(format='rgb24')
            num_decoded += 1
            if num_decoded > last:
                break
    if last not in decoded:
        raise ValueError(f'{path}: frame index {last} is out of range; '
                         f'the video has {num_decoded} frames')
    return np.stack([decoded[index] for index in indices.tolist()])


def load_clips(path, frame_counts: Sequence[int], size: int, start_frame: int = 0,
               end_frame: int | None = None) -> list[np.ndarray]:
    """One float32 `[n, size, size, 3]` CLIP-normalised clip per `n` in `frame_counts`, each
    eval-sampled independently over frames `[start_frame, end_frame)` (default: the whole
    video). The video is decoded once for all of them (e.g. the slow and fast branches)."""
    if end_frame is None:
        end_frame = video_info(path)[0]
    if end_frame <= start_frame:
        raise ValueError(f'{path}: empty frame range [{start_frame}, {end_frame})')
    index_sets = [sample_eval(start_frame, end_frame, n) for n in frame_counts]
    frames = read_frames(path, np.concatenate(index_sets))
    return np.split(eval_transform(frames, size), np.cumsum(frame_counts)[:-1])

