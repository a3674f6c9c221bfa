"""Per-video detection files as a source of frame detections: `epic` reads
`{root}/{video_id}.pkl` (`epic_detections.py`), `jsonl` reads `{root}/{video_id}.jsonl`
(`jsonl_detections.py`).

`make_detection_source(name, root, ...).frames(video_id, frame_numbers)` returns
`{frame_number: FrameDetections}` for the requested frames present in the file, with
detections below the hand/object thresholds removed. Malformed files raise
`DetectionFormatError` naming the file, the frame and the field.
"""
from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from egovideo_jax.hod.detections import (
    DEFAULT_HAND_THRESHOLD,
    DEFAULT_OBJECT_THRESHOLD,
    DetectionFormatError,
    FrameDetections,
)
from egovideo_jax.hod.epic_detections import read_epic_pickle
from egovideo_jax.hod.jsonl_detections import read_jsonl


class DetectionSource:
    """Per-video detection files under `root`, named `{video_id}{suffix}`.

    `frames(video_id, frame_numbers)` -> `{frame_number: FrameDetections}` for the requested
    frames found in the file (a frame the file lacks is left out: no detections), each with
    the detections below `hand_threshold` / `object_threshold` removed. The last
    `cache_videos` files read are kept in memory, since clips of one video come together.
    """
    suffix: str = ''
    read_file: Callable[[str | os.PathLike], list[FrameDetections]]

    def __init__(self, root: str | os.PathLike, hand_threshold: float = DEFAULT_HAND_THRESHOLD,
                 object_threshold: float = DEFAULT_OBJECT_THRESHOLD, cache_videos: int = 4):
        self.root = Path(root)
        self.hand_threshold = hand_threshold
        self.object_threshold = object_threshold
        self._cache_videos = cache_videos
        self._cache: collections.OrderedDict[str, dict[int, FrameDetections]] = (
            collections.OrderedDict())

    def path(self, video_id: str) -> Path:
        if not video_id or '/' in video_id or '\\' in video_id or video_id in ('.', '..'):
            raise ValueError(f'video_id {video_id!r}: not a plain file name')
        return self.root / f'{video_id}{self.suffix}'

    def frames(self, video_id: str, frame_numbers: Iterable[int]) -> dict[int, FrameDetections]:
        video = self._video(video_id)
        return {number: video[number].filtered(self.hand_threshold, self.object_threshold)
                for number in frame_numbers if number in video}

    def _video(self, video_id: str) -> dict[int, FrameDetections]:
        if video_id in self._cache:
            self._cache.move_to_end(video_id)
            return self._cache[video_id]
        path = self.path(video_id)
        if not path.exists():
            raise FileNotFoundError(f'no detections for video {video_id!r}: {path} does not exist')
        video = {}
        for frame in self.read_file(path):
            if frame.frame_number in video:
                raise DetectionFormatError(f'{path}: frame_number {frame.frame_number} '
                                           'appears more than once')
            video[frame.frame_number] = frame
        self._cache[video_id] = video
        while len(self._cache) > self._cache_videos:
            self._cache.popitem(last=False)
        return video


class EpicSource(DetectionSource):
    """EPIC-KITCHENS-100 pickles `{root}/{video_id}.pkl`; frame numbers are EPIC's, 1-based."""
    suffix = '.pkl'
    read_file = staticmethod(read_epic_pickle)


class JsonlSource(DetectionSource):
    """Our JSONL files `{root}/{video_id}.jsonl`."""
    suffix = '.jsonl'
    read_file = staticmethod(read_jsonl)


DETECTION_SOURCES: dict[str, type[DetectionSource]] = {
    'epic': EpicSource,
    'jsonl': JsonlSource,
}


def make_detection_source(name: str, root: str | os.PathLike, **options) -> DetectionSource:
    """`DETECTION_SOURCES[name](root, **options)`; options: hand_threshold, object_threshold,
    cache_videos."""
    if name not in DETECTION_SOURCES:
        raise ValueError(f'unknown detection source {name!r}; expected one of '
                         f'{sorted(DETECTION_SOURCES)}')
    return DETECTION_SOURCES[name](root, **options)
