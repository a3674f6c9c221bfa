"""Frames of a clip `[start, end)` from mp4 videos, for writing records.

Two layouts under a video root:
- whole videos: `ROOT/VIDEO_ID.mp4`;
- Ego4D-style chunks: `ROOT/VIDEO_ID/K.mp4`, chunk K covering `[K * chunk_seconds,
  (K + 1) * chunk_seconds)` of the video; a clip may span two (or more) chunks.

For N frames, the targets are the centres of N equal segments of `[start, end)`; each target
gets the decoded frame whose timestamp is nearest (after one seek per file), so a clip
shorter than N frame intervals repeats frames.
"""
from __future__ import annotations

import dataclasses
import math
import os

import av
import numpy as np

from egovideo_jax.media.video import open_video


class MissingVideoError(FileNotFoundError):
    """No video file (or no chunk holding the clip start) for a video id."""


class ClipOutsideVideoError(ValueError):
    """The clip starts after the last frame of the video."""


@dataclasses.dataclass(frozen=True)
class VideoSegment:
    """One file and the video time where it starts."""
    path: str
    start_time: float


def target_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """Centres of `num_frames` equal segments of `[start, end)`."""
    return start + (np.arange(num_frames) + 0.5) * ((end - start) / num_frames)


def resolve_segments(video_root: str, video_id: str, times: np.ndarray,
                     chunk_seconds: float) -> list[tuple[VideoSegment, np.ndarray]]:
    """The files holding `times` (sorted seconds), each with the indices of the times it
    serves. Times past the last existing chunk go to the last chunk before them (a clip
    running over the end of the video); a missing first chunk is a MissingVideoError."""
    whole = os.path.join(video_root, f'{video_id}.mp4')
    if os.path.isfile(whole):
        return [(VideoSegment(whole, 0.0), np.arange(len(times)))]
    chunk_dir = os.path.join(video_root, video_id)
    if not os.path.isdir(chunk_dir):
        raise MissingVideoError(f'no video {whole} and no chunk directory {chunk_dir}')
    chunks = np.floor(times / chunk_seconds).astype(int)
    segments: list[tuple[VideoSegment, list[int]]] = []
    for chunk in sorted(set(chunks.tolist())):
        path = os.path.join(chunk_dir, f'{chunk}.mp4')
        indices = np.flatnonzero(chunks == chunk).tolist()
        if os.path.isfile(path):
            segments.append((VideoSegment(path, chunk * chunk_seconds), indices))
        elif segments:
            segments[-1][1].extend(indices)
        else:
            raise MissingVideoError(f'missing chunk {path} (clip time {times[indices[0]]:.3f} s '
                                    f'with {chunk_seconds} s chunks)')
    return [(segment, np.asarray(indices)) for segment, indices in segments]


def decode_nearest_frames(path: str, targets: np.ndarray, short_side: int,
                          clip_starts_here: bool = True
                          ) -> tuple[list[np.ndarray], list[float], float]:
    """For sorted `targets` (seconds from the start of the file): the nearest decoded frames
    as uint8 RGB with the short side resized to `short_side`, their timestamps, and the
    file's frame rate (0.0 when unknown).

    ValueError (naming the file) for undecodable files. Targets past the last frame get the
    last frame, except that a clip must start inside the video: when `clip_starts_here`
    and the first target lies beyond the last frame, ClipOutsideVideoError.
    """
    with open_video(path) as (container, stream):
        origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        seek_seconds = max(0.0, float(targets[0]) + origin)
        container.seek(int(seek_seconds / stream.time_base), stream=stream, backward=True)
        rate = stream.average_rate
        chosen = _nearest(container.decode(stream), targets, origin, path, clip_starts_here)
        size = _resized(chosen[0][1].width, chosen[0][1].height, short_side)
        converted = {}
        for _, frame in chosen:
            if id(frame) not in converted:
                converted[id(frame)] = frame.reformat(
                    width=size[0], height=size[1], format='rgb24',
                    interpolation='BICUBIC').to_ndarray()
    return ([converted[id(frame)] for _, frame in chosen], [time for time, _ in chosen],
            float(rate) if rate else 0.0)


TIE_TOLERANCE_S = 1e-6


def _nearest(frames, targets, origin, path, clip_starts_here
             ) -> list[tuple[float, av.VideoFrame]]:
    chosen = []
    previous = None  # (time, frame) of the last decoded frame
    for frame in frames:
        if frame.time is None:
            continue
        current = (frame.time - origin, frame)
        while len(chosen) < len(targets) and current[0] >= targets[len(chosen)]:
            target = targets[len(chosen)]
            # Ties go to the earlier frame; the tolerance keeps float noise in the times from
            # flipping a tie (e.g. targets exactly between frames when storing every frame).
            closer_before = (previous is not None
                             and target - previous[0] <= current[0] - target + TIE_TOLERANCE_S)
            chosen.append(previous if closer_before else current)
        if len(chosen) == len(targets):
            return chosen
        previous = current
    if previous is None:
        raise ValueError(f'{path}: no frame decoded after seeking to {targets[0]:.3f} s')
    if clip_starts_here and not chosen:
        raise ClipOutsideVideoError(f'{path}: clip frame at {targets[0]:.3f} s is after the '
                                    f'last frame ({previous[0]:.3f} s)')
    return chosen + [previous] * (len(targets) - len(chosen))


def _resized(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_clip_frames(video_root: str, video_id: str, start: float, end: float,
                     num_frames: int, short_side: int, chunk_seconds: float
                     ) -> tuple[list[np.ndarray], np.ndarray, float]:
    """`(frames, frame_times, fps)` of a clip: `num_frames` uint8 RGB frames (short side
    `short_side`), their video timestamps (float32 seconds) and the source frame rate
    (0.0 when unknown)."""
    times = _clip_times(start, end, num_frames)
    return _read_segments(resolve_segments(video_root, video_id, times, chunk_seconds), times,
                          short_side)


def read_video_frames(path: str, start: float, end: float, num_frames: int, short_side: int
                      ) -> tuple[list[np.ndarray], np.ndarray, float]:
    """`read_clip_frames` for a video at a known path (e.g. an EPIC `P01/P01_01.MP4`, an
    EGTEA trimmed clip); MissingVideoError when the file does not exist."""
    if not os.path.isfile(path):
        raise MissingVideoError(f'no video {path}')
    times = _clip_times(start, end, num_frames)
    return _read_segments([(VideoSegment(os.fspath(path), 0.0), np.arange(num_frames))], times,
                          short_side)


def _clip_times(start: float, end: float, num_frames: int) -> np.ndarray:
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise ValueError(f'bad clip times [{start}, {end})')
    return target_times(start, end, num_frames)


def _read_segments(segments: list[tuple[VideoSegment, np.ndarray]], times: np.ndarray,
                   short_side: int) -> tuple[list[np.ndarray], np.ndarray, float]:
    num_frames = len(times)
    frames: list = [None] * num_frames
    frame_times = np.zeros(num_frames, np.float32)
    rates = []
    for number, (segment, indices) in enumerate(segments):
        decoded, decoded_times, rate = decode_nearest_frames(
            segment.path, times[indices] - segment.start_time, short_side,
            clip_starts_here=number == 0)
        rates.append(rate)
        for index, frame, time in zip(indices, decoded, decoded_times):
            frames[index] = frame
            frame_times[index] = segment.start_time + time
    return frames, frame_times, rates[0]
