"""The per-clip stages of the HOD pipeline after `clips.py`, as plain functions that the
in-process runner (`pipeline.py`) and the Beam runner (`beam.py`) both call:

    frames      `load_frames(spec, options)`: `frames_per_clip` frames at the centres of equal
                segments of the clip, short side `short_side` (`records.video_clips`: whole
                videos `{video_root}/{video_id}.mp4` or 15 s chunks `{video_id}/{k}.mp4`)
    detections  `make_clip_detector(options)`: per stored frame, the detections of the source
                frame it shows. Files (`epic`, `jsonl`) are looked up by frame number
                `round(time * fps) + 1` (EPIC numbers frames from 1; fps is the video's unless
                `detection_fps` says otherwise); `detector` runs a live detector on the frames.
    tracks      `clip_tracks`: `tracks.build_tracks` + `motion.motion_facts`
    narration   `narrate_clips(prepared, narrator, cache)`: a `ValidatedNarrator` (LLM answers
                checked, retried, else the rules fallback), a batch at a time so LLM back-ends
                work on several clips at once (their own `max_concurrency` bounds the requests
                in flight), through the narration cache (`cache.py`)
    records     `finish_clip`: the record of `records.schema` plus what the outputs need

A clip that cannot pass a stage raises `clips.ClipSkipped`; `prepare_or_skip` and
`narrate_clips` turn it into the clip's `report.Skip`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from egovideo_jax.hod.cache import CachedNarration, FinishedClip, NarrationCache, narration_key
from egovideo_jax.hod.clips import (
    BAD_DETECTIONS,
    CLIP_OUTSIDE_VIDEO,
    CORRUPT_VIDEO,
    EMPTY_DETECTIONS,
    MISSING_DETECTIONS,
    MISSING_VIDEO,
    NARRATOR_FAILURE,
    UNEXPECTED,
    UNKNOWN_FPS,
    ClipSkipped,
    ClipSpec,
)
from egovideo_jax.hod.detection_sources import DetectionSource, make_detection_source
from egovideo_jax.hod.detections import DetectionFormatError, FrameDetections
from egovideo_jax.hod.motion import MotionFacts, motion_facts
from egovideo_jax.hod.narrators.validated import PRIMARY, NarrationResult, ValidatedNarrator
from egovideo_jax.hod.options import PipelineOptions
from egovideo_jax.hod.report import Skip
from egovideo_jax.hod.tracks import Tracks, build_tracks
from egovideo_jax.records import schema, video_clips


@dataclasses.dataclass
class PreparedClip:
    """A clip through frames, detections and tracks, ready to be narrated."""
    spec: ClipSpec
    frames_jpeg: list[bytes]
    frame_times: np.ndarray
    fps: float
    detections: list[FrameDetections | None]
    tracks: Tracks
    facts: MotionFacts



# ----------------------------------------------------------------------------- frames

def load_frames(spec: ClipSpec, options: PipelineOptions
                ) -> tuple[list[np.ndarray], np.ndarray, float]:
    """`(frames, frame_times, fps)`, as `video_clips.read_clip_frames`."""
    try:
        return video_clips.read_clip_frames(options.video_root, spec.video_id, spec.start,
                                            spec.end, options.frames_per_clip,
                                            options.short_side, options.chunk_seconds)
    except video_clips.MissingVideoError as error:
        raise ClipSkipped('frames', MISSING_VIDEO, str(error)) from None
    except video_clips.ClipOutsideVideoError as error:
        raise ClipSkipped('frames', CLIP_OUTSIDE_VIDEO, str(error)) from None
    except (ValueError, OSError) as error:
        raise ClipSkipped('frames', CORRUPT_VIDEO, str(error)) from None


# ----------------------------------------------------------------------------- detections

def frame_numbers(frame_times: Sequence[float], fps: float) -> list[int]:
    """The 1-based numbers (EPIC's) of the source frames shown at `frame_times` seconds."""
    return [int(round(float(time) * fps)) + 1 for time in frame_times]


class FileDetections:
    """Detections read from per-video files (`detection_sources.make_detection_source`)."""

    def __init__(self, source: DetectionSource, fps: float = 0.0):
        self.source = source
        self.fps = fps

    def __call__(self, video_id: str, frames: Sequence[np.ndarray], frame_times: np.ndarray,
                 video_fps: float) -> list[FrameDetections | None]:
        fps = self.fps or video_fps
        if fps <= 0:
            raise ClipSkipped('detections', UNKNOWN_FPS, 'the video does not state its frame '
                              'rate; set detection_fps to the rate the detections count at')
        numbers = frame_numbers(frame_times, fps)
        try:
            found = self.source.frames(video_id, numbers)
        except FileNotFoundError as error:
            raise ClipSkipped('detections', MISSING_DETECTIONS, str(error)) from None
        except (DetectionFormatError, ValueError) as error:
            raise ClipSkipped('detections', BAD_DETECTIONS, str(error)) from None
        return [found.get(number) for number in numbers]


class LiveDetections:
    """A live frame detector (`detectors.make_frame_detector`) run on the stored frames."""

    def __init__(self, detector, hand_threshold: float, object_threshold: float):
        self.detector = detector
        self.hand_threshold, self.object_threshold = hand_threshold, object_threshold

    def __call__(self, video_id: str, frames: Sequence[np.ndarray], frame_times: np.ndarray,
                 video_fps: float) -> list[FrameDetections | None]:
        results = self.detector.detect(np.stack(frames), list(range(1, len(frames) + 1)))
        return [frame.filtered(self.hand_threshold, self.object_threshold)
                for frame in results]


def make_clip_detector(options: PipelineOptions) -> FileDetections | LiveDetections:
    if options.detection_source == 'detector':
        from egovideo_jax.hod import detectors  # optional back-ends: imported only when asked
        detector = detectors.make_frame_detector(options.detector,
                                                 **dict(options.detector_options))
        return LiveDetections(detector, options.hand_threshold, options.object_threshold)
    if not options.detection_root:
        raise ValueError(f'detection_root: the {options.detection_source!r} source needs the '
                         'directory of its detection files')
    source = make_detection_source(
        options.detection_source, options.detection_root,
        hand_threshold=options.hand_threshold, object_threshold=options.object_threshold)
    return FileDetections(source, options.detection_fps)


def check_not_empty(detections: Sequence[FrameDetections | None]) -> None:
    if not any(frame is not None and (frame.hands or frame.objects) for frame in detections):
        raise ClipSkipped('detections', EMPTY_DETECTIONS, f'no hand or object above the score '
                                                          f'thresholds in any of the '
                                                          f'{len(detections)} frames')


# ----------------------------------------------------------------------------- tracks

def clip_tracks(detections: Sequence[FrameDetections | None], frame_times: np.ndarray,
                options: PipelineOptions) -> tuple[Tracks, MotionFacts]:
    tracks = build_tracks(detections, options.hand_threshold, options.object_threshold,
                          options.smoothing)
    return tracks, motion_facts(tracks, frame_times)


def prepare_clip(spec: ClipSpec, options: PipelineOptions, detect) -> PreparedClip:
    """Frames, detections and tracks of a clip; ClipSkipped when one of them fails (an
    unexpected error too, so one odd clip cannot stop the run)."""
    stage = 'frames'
    try:
        frames, frame_times, fps = load_frames(spec, options)
        stage = 'detections'
        detections = detect(spec.video_id, frames, frame_times, fps)
        check_not_empty(detections)
        stage = 'tracks'
        tracks, facts = clip_tracks(detections, frame_times, options)
        frames_jpeg = [schema.encode_jpeg(frame, options.jpeg_quality) for frame in frames]
    except ClipSkipped:
        raise
    except Exception as error:
        raise ClipSkipped(stage, UNEXPECTED, f'{type(error).__name__}: {error}') from error
    return PreparedClip(spec, frames_jpeg, frame_times, fps, list(detections), tracks, facts)


def prepare_or_skip(spec: ClipSpec, options: PipelineOptions, detect) -> PreparedClip | Skip:
    try:
        return prepare_clip(spec, options, detect)
    except ClipSkipped as skipped:
        return skipped.skip(spec.line, spec.clip_id)


# ----------------------------------------------------------------------------- narration

def clip_narration_key(prepared: PreparedClip, narrator: ValidatedNarrator,
                       smoothing: int) -> str:
    spec = prepared.spec
    return narration_key(spec.clip_id, spec.start, spec.end, spec.narration,
                         prepared.detections, smoothing, narrator.name, narrator.model)


def narrate_clips(batch: Sequence[PreparedClip], narrator: ValidatedNarrator,
                  cache: NarrationCache | None, smoothing: int
                  ) -> list[FinishedClip | Skip]:
    """The finished clips of a batch, in order: cached narrations are reused, the rest go to
    the narrator together (an LLM back-end works on them concurrently)."""
    keys = [clip_narration_key(prepared, narrator, smoothing) for prepared in batch]
    cached = [cache.get(key) if cache is not None else None for key in keys]
    missing = [index for index, entry in enumerate(cached) if entry is None]
    results = _narrate_isolated([batch[index] for index in missing], narrator)
    finished: list[FinishedClip | Skip] = []
    answers = dict(zip(missing, results))
    for index, prepared in enumerate(batch):
        if cached[index] is not None:
            entry = cached[index]
            finished.append(finish_clip(prepared, NarrationResult(entry.text, PRIMARY,
                                                                  entry.attempts, []),
                                        from_cache=True))
            continue
        result = answers[index]
        if isinstance(result, Skip):
            finished.append(result)
            continue
        if cache is not None and result.source == PRIMARY:
            cache.put(keys[index], CachedNarration(result.text, narrator.name, narrator.model,
                                                   result.attempts))
        finished.append(finish_clip(prepared, result, from_cache=False))
    return finished


def _narrate_isolated(batch: Sequence[PreparedClip], narrator: ValidatedNarrator
                      ) -> list[NarrationResult | Skip]:
    """The batch in one call; when that raises (the fallback failed too), clip by clip, so
    only the clips that fail are skipped."""
    requests = [(prepared.spec.narration, prepared.tracks, prepared.facts)
                for prepared in batch]
    if not requests:
        return []
    try:
        return list(narrator.narrate_checked_many(requests))
    except Exception as error:
        if len(batch) == 1:
            spec = batch[0].spec
            return [Skip(spec.line, spec.clip_id, 'narration', NARRATOR_FAILURE,
                         f'{type(error).__name__}: {error}')]
    return [result for prepared in batch for result in _narrate_isolated([prepared], narrator)]


# ----------------------------------------------------------------------------- records

def clip_record(prepared: PreparedClip, hod: Sequence[str]) -> dict:
    """The clip dict of `records.schema`."""
    spec = prepared.spec
    return {
        'clip_id': spec.clip_id,
        'video_id': spec.video_id,
        'source': spec.source,
        'start': spec.start,
        'end': spec.end,
        'frames_jpeg': prepared.frames_jpeg,
        'frame_times': prepared.frame_times,
        'narration': spec.narration,
        'hod': list(hod),
        **prepared.tracks.to_record_fields(),
    }


def finish_clip(prepared: PreparedClip, result: NarrationResult,
                from_cache: bool) -> FinishedClip:
    spec = prepared.spec
    hod = (result.text,)
    return FinishedClip(
        clip_id=spec.clip_id, line=spec.line, video_id=spec.video_id, start=spec.start,
        end=spec.end, source=spec.source, hod=hod, narration_source=result.source,
        from_cache=from_cache, attempts=result.attempts, problems=tuple(result.problems),
        fps=float(prepared.fps), record=schema.encode_clip(clip_record(prepared, hod)))
