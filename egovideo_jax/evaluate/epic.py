"""EPIC-KITCHENS-100 clip loading, shared by the MIR and CLS evaluators.

The CSVs (`EPIC_100_train.csv`, `EPIC_100_validation.csv`, `EPIC_100_retrieval_test.csv`)
share the columns in `EPIC_COLUMNS`; timestamps are `HH:MM:SS.ff`. The files are read in
`egovideo_jax/io/epic_files.py` (`read_epic_csv`, `EpicClip`, `find_video(s)`, re-exported
here for the evaluators). Clip frames follow the reference loader (LaViLa, used by EgoVideo):
the clip starts at frame `round(start_seconds * fps)` of its video (fps read from the file)
and spans `max(int(duration * fps), n)` frames, cut at the end of the video; `n` frames are
then eval-sampled from that range.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from egovideo_jax.io.epic_files import (
    EPIC_COLUMNS,
    EpicClip,
    find_video,
    find_videos,
    read_epic_csv,
)
from egovideo_jax.media.frames import read_clips
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.video import video_info

__all__ = ['EPIC_COLUMNS', 'ClipLoader', 'EpicClip', 'find_video', 'find_videos',
           'frame_range', 'read_epic_csv']


def frame_range(clip: EpicClip, fps: float, num_video_frames: int, n: int) -> tuple[int, int]:
    """Frames `[start, end)` of `clip` in its video when sampling `n` frames."""
    start = round(clip.start_seconds * fps)
    if start >= num_video_frames:
        raise ValueError(f'the clip starts at frame {start}, past the end of its video '
                         f'({num_video_frames} frames at {fps:g} fps)')
    stop_seconds = min(clip.stop_seconds, num_video_frames / fps)
    duration = max(int((stop_seconds - clip.start_seconds) * fps), n)
    return start, min(start + duration, num_video_frames)


class ClipLoader:
    """`loader((clip, path))` -> the clip's video inputs, one per frame count. Frame counts
    and fps are read once per video (threads may race to fill the cache; both agree)."""

    def __init__(self, frame_counts: Sequence[int], size: int):
        self.frame_counts = tuple(frame_counts)
        self.size = size
        self._info: dict[Path, tuple[int, float]] = {}

    def indices(self, clip: EpicClip, path: Path, n: int) -> np.ndarray:
        if path not in self._info:
            self._info[path] = video_info(path)
        num_frames, fps = self._info[path]
        if fps <= 0:
            raise ValueError(f'{path} does not state its frame rate')
        return sample_eval(*frame_range(clip, fps, num_frames, n), n)

    def __call__(self, clip_and_path: tuple[EpicClip, Path]) -> list[np.ndarray]:
        clip, path = clip_and_path
        try:
            return read_clips(path, [self.indices(clip, path, n) for n in self.frame_counts],
                              self.size)
        except ValueError as error:
            raise ValueError(f'{clip.source}: {error}') from error
