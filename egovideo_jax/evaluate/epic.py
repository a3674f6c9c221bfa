"""EPIC-KITCHENS-100 annotation CSVs and clip loading, shared by the MIR and CLS evaluators.

The CSVs (`EPIC_100_train.csv`, `EPIC_100_validation.csv`, `EPIC_100_retrieval_test.csv`)
share the columns in `EPIC_COLUMNS`; timestamps are `HH:MM:SS.ff`. Clip frames follow the
reference loader (LaViLa, used by EgoVideo): the clip starts at frame
`round(start_seconds * fps)` of its video (fps read from the file) and spans
`max(int(duration * fps), n)` frames, cut at the end of the video; `n` frames are then
eval-sampled from that range.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from egovideo_jax.io.csv_rows import parse_timestamp, read_csv_rows
from egovideo_jax.media.frames import read_clips
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.video import video_info

EPIC_COLUMNS = ('narration_id', 'participant_id', 'video_id', 'narration_timestamp',
                'start_timestamp', 'stop_timestamp', 'start_frame', 'stop_frame', 'narration',
                'verb', 'verb_class', 'noun', 'noun_class', 'all_nouns', 'all_noun_classes')


@dataclasses.dataclass(frozen=True)
class EpicClip:
    narration_id: str
    participant_id: str
    video_id: str
    start_seconds: float
    stop_seconds: float
    narration: str
    verb_class: int
    noun_class: int
    source: str  # 'FILE, line N': where errors about this clip point

    @property
    def action(self) -> str:
        """The EK-100 action class name, `"{verb_class}:{noun_class}"`."""
        return f'{self.verb_class}:{self.noun_class}'


def read_epic_csv(path: str | Path) -> list[EpicClip]:
    clips = []
    for source, row in read_csv_rows(path, EPIC_COLUMNS):
        try:
            start, stop = parse_timestamp(row['start_timestamp']), parse_timestamp(
                row['stop_timestamp'])
            verb_class, noun_class = int(row['verb_class']), int(row['noun_class'])
        except ValueError as error:
            raise ValueError(f'{source}: {error}') from None
        if stop < start:
            raise ValueError(f'{source}: stop_timestamp {row["stop_timestamp"]} is before '
                             f'start_timestamp {row["start_timestamp"]}')
        if not row['narration_id'] or not row['video_id']:
            raise ValueError(f'{source}: empty narration_id or video_id')
        clips.append(EpicClip(row['narration_id'], row['participant_id'], row['video_id'],
                              start, stop, row['narration'], verb_class, noun_class, source))
    if not clips:
        raise ValueError(f'{path}: no clips below the header')
    return clips


def find_video(root: str | Path, clip: EpicClip) -> Path:
    """`{root}/{video_id}.mp4`, else `{root}/{participant_id}/{video_id}.MP4`."""
    candidates = [Path(root) / f'{clip.video_id}.mp4',
                  Path(root) / clip.participant_id / f'{clip.video_id}.MP4']
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(f'{clip.source}: video {clip.video_id} not found; looked for '
                     + ' and '.join(map(str, candidates)))


def find_videos(root: str | Path, clips: Sequence[EpicClip]) -> list[Path]:
    """Each clip's video path (looked up once per video); a missing video names its row."""
    found: dict[str, Path] = {}
    for clip in clips:
        if clip.video_id not in found:
            found[clip.video_id] = find_video(root, clip)
    return [found[clip.video_id] for clip in clips]


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
