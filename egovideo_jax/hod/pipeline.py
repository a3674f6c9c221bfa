"""The HOD narration pipeline: its stages as plain functions, the in-process runner, the
and the outputs.

Stages (`beam.py` runs the same functions as an Apache Beam pipeline):
    clips       `read_clip_specs(csv)`: rows `video_id,start_second,end_second,text[,dataset]`
                (header optional; `records.convert_csv.read_rows`) or EPIC-KITCHENS-100
                annotation CSVs -> `ClipSpec`s
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

A clip that cannot pass a stage (missing or corrupt video, clip outside the video, missing,
malformed or empty detections, malformed row, narrator failure) becomes a `report.Skip` that
names the clip, the stage and the reason; the other clips are not affected.

`run_pipeline(csv, output_dir, options, narrator, ...)` writes, under `output_dir`:
    records/              HOD records (`records.DatasetWriter`, input order), manifest.json
    hod_narrations.csv    video_id,start_second,end_second,text,dataset; `text` is a Python
                          list literal of the clip's HOD narrations
    report.json           `report.RunReport`
    work/run.json         the arguments the finished clips were made with
    work/finished/        `cache.FinishedClipStore`: a file per finished clip
    cache/                the narration cache (unless `cache_dir` points elsewhere)
A killed run restarted with the same arguments skips its finished clips and writes the
outputs from the store (records swapped in whole), so every clip appears exactly once.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tqdm

from egovideo_jax.io.csv_rows import parse_timestamp
from egovideo_jax.hod import detections as detections_lib
from egovideo_jax.hod.cache import (CachedNarration, FinishedClip, FinishedClipStore,
                                    NarrationCache, narration_key)
from egovideo_jax.hod.detections import DetectionFormatError, FrameDetections
from egovideo_jax.hod.motion import MotionFacts, motion_facts
from egovideo_jax.hod.narrators import Narrator, make_narrator
from egovideo_jax.hod.narrators.validated import PRIMARY, NarrationResult, ValidatedNarrator
from egovideo_jax.hod.prompt import PROMPT_VERSION
from egovideo_jax.hod.report import (RunReport, Skip, narrator_counts, stage_counts,
                                     write_report)
from egovideo_jax.hod.tracks import Tracks, build_tracks
from egovideo_jax.records import convert_csv, schema, video_clips
from egovideo_jax.io.atomic import fsync_directory, write_bytes_atomically
from egovideo_jax.records.dataset import DatasetWriter
from egovideo_jax.records.tfrecord import RecordError

CSV_FIELDS = ('video_id', 'start_second', 'end_second', 'text', 'dataset')
RECORDS_DIR, CSV_NAME, WORK_DIR, CACHE_DIR = 'records', 'hod_narrations.csv', 'work', 'cache'
RUN_NAME = 'run.json'
DETECTION_SOURCES = ('epic', 'jsonl', 'detector')

# Skip reasons (report.json, the summary table).
MALFORMED_ROW, BAD_TIMES = convert_csv.MALFORMED, convert_csv.BAD_TIMES
MISSING_VIDEO, CORRUPT_VIDEO = convert_csv.MISSING_VIDEO, 'corrupt video'
CLIP_OUTSIDE_VIDEO = 'clip outside video'
MISSING_DETECTIONS, BAD_DETECTIONS = 'missing detections', 'malformed detections'
EMPTY_DETECTIONS, UNKNOWN_FPS = 'empty detections', 'unknown frame rate'
NARRATOR_FAILURE, DAMAGED_CLIP, UNEXPECTED = ('narrator failure', 'damaged finished clip',
                                             'unexpected error')


class ClipSkipped(Exception):
    """Raised by a stage for a clip that cannot pass it."""

    def __init__(self, stage: str, reason: str, detail: str):
        super().__init__(f'{stage}: {reason}: {detail}')
        self.stage, self.reason, self.detail = stage, reason, detail

    def __reduce__(self):  # keeps the fields when raised in a worker process
        return type(self), (self.stage, self.reason, self.detail)

    def skip(self, line: int, clip: str) -> Skip:
        return Skip(line, clip, self.stage, self.reason, self.detail)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    line: int
    clip_id: str
    video_id: str
    start: float
    end: float
    narration: str
    source: str  # the dataset column, or the run's default


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What decides the content of a clip's record (and so the resume check)."""
    video_root: str
    detection_source: str = 'epic'  # one of DETECTION_SOURCES
    detection_root: str = ''  # the files of `epic` / `jsonl`
    detection_fps: float = 0.0  # frame rate the detection files count frames at; 0: the video's
    detector: str = 'mediapipe'  # `detector` source: a `detectors.FRAME_DETECTORS` name
    detector_options: tuple[tuple[str, object], ...] = ()
    hand_threshold: float = detections_lib.DEFAULT_HAND_THRESHOLD
    object_threshold: float = detections_lib.DEFAULT_OBJECT_THRESHOLD
    smoothing: int = 0
    frames_per_clip: int = 32
    short_side: int = 256
    chunk_seconds: float = 15.0
    jpeg_quality: int = 90
    default_source: str = convert_csv.DEFAULT_SOURCE

    def __post_init__(self):
        if self.detection_source not in DETECTION_SOURCES:
            raise ValueError(f'detection_source: expected one of {DETECTION_SOURCES}, got '
                             f'{self.detection_source!r}')
        if self.frames_per_clip < 1 or self.short_side < 1 or self.chunk_seconds <= 0:
            raise ValueError('frames_per_clip and short_side must be >= 1 and chunk_seconds '
                             f'> 0, got {self.frames_per_clip}, {self.short_side}, '
                             f'{self.chunk_seconds}')


@dataclasses.dataclass(frozen=True)
class NarratorSpec:
    """How to build the narrator where it runs (worker processes, Beam workers): `name` and
    `options` for `narrators.make_narrator`, `retries` for `ValidatedNarrator`."""
    name: str = 'rules'
    options: tuple[tuple[str, object], ...] = ()
    retries: int = 1

    def build(self) -> ValidatedNarrator:
        return ValidatedNarrator(make_narrator(self.name, **dict(self.options)),
                                 retries=self.retries)


def validated_narrator(narrator: NarratorSpec | Narrator) -> ValidatedNarrator:
    if isinstance(narrator, NarratorSpec):
        return narrator.build()
    if isinstance(narrator, ValidatedNarrator):
        return narrator
    return ValidatedNarrator(narrator)


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


# ----------------------------------------------------------------------------- clips

def clip_id_for(video_id: str, start: float, end: float, line: int) -> str:
    """The id `records convert` gives the same row."""
    return f'{video_id}:{start:.3f}-{end:.3f}#{line}'


def parse_row(row: convert_csv.CsvRow, default_source: str) -> ClipSpec:
    fields = row.fields
    if len(fields) not in (4, 5) or not fields[0].strip():
        raise ClipSkipped('clips', MALFORMED_ROW, f'expected video_id,start_second,end_second,'
                                                  f'text[,dataset], got {len(fields)} fields')
    video_id, start_text, end_text, text = (field.strip() for field in fields[:4])
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        raise ClipSkipped('clips', BAD_TIMES, f'start/end are not numbers: {start_text!r}, '
                                              f'{end_text!r}') from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise ClipSkipped('clips', BAD_TIMES, f'need 0 <= start < end, got [{start}, {end})')
    source = (fields[4].strip() if len(fields) == 5 else '') or default_source
    return ClipSpec(row.line, clip_id_for(video_id, start, end, row.line), video_id, start,
                    end, text, source)


EPIC_COLUMNS = ('video_id', 'start_timestamp', 'stop_timestamp', 'narration')


def read_clip_specs(csv_path: str | os.PathLike,
                    default_source: str = convert_csv.DEFAULT_SOURCE
                    ) -> Iterator[ClipSpec | Skip]:
    """The table's clips in order; a row that is not a clip comes as a Skip. Tables are the
    reference format (`video_id,start_second,end_second,text[,dataset]`, header optional) or
    EPIC-KITCHENS-100 annotation CSVs (a header naming `EPIC_COLUMNS` among others;
    timestamps `HH:MM:SS.ff`; dataset `epic`)."""
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f'narration table {csv_path} does not exist')
    rows = _epic_rows(csv_path)
    for row in convert_csv.read_rows(csv_path) if rows is None else rows:
        if isinstance(row, Skip):
            yield row
            continue
        try:
            yield parse_row(row, default_source)
        except ClipSkipped as skipped:
            name = row.fields[0].strip() if row.fields else ''
            yield skipped.skip(row.line, f'line {row.line}' + (f' ({name})' if name else ''))


def _epic_rows(csv_path: str | os.PathLike) -> list[convert_csv.CsvRow | Skip] | None:
    """The rows of an EPIC-KITCHENS-100 annotation CSV in the reference form, or None when
    the table is not one."""
    with open(csv_path, newline='', encoding='utf-8') as file:
        reader = csv.reader(file)
        header = next(reader, [])
        if not set(EPIC_COLUMNS) <= set(header):
            return None
        columns = [header.index(name) for name in EPIC_COLUMNS]
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                rows.append(Skip(reader.line_num, f'line {reader.line_num} ({fields[0]})',
                                 'clips', MALFORMED_ROW, f'expected {len(header)} fields as '
                                                         f'in the header, got {len(fields)}'))
                continue
            video_id, start, stop, narration = (fields[column] for column in columns)
            try:
                start, stop = parse_timestamp(start), parse_timestamp(stop)
            except ValueError as error:
                rows.append(Skip(reader.line_num, f'line {reader.line_num} ({video_id})',
                                 'clips', BAD_TIMES, str(error)))
                continue
            rows.append(convert_csv.CsvRow(reader.line_num, (
                video_id, repr(start), repr(stop), narration, 'epic')))
        return rows


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
    """Detections read from per-video files (`detections.make_detection_source`)."""

    def __init__(self, source: detections_lib.DetectionSource, fps: float = 0.0):
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
    source = detections_lib.make_detection_source(
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


def csv_row(clip: FinishedClip) -> list[str]:
    """The reference-format row: times as Python floats, the narrations as a list literal."""
    return [clip.video_id, repr(clip.start), repr(clip.end), repr(list(clip.hod)), clip.source]


def csv_text(rows: Iterable[list[str]]) -> str:
    """The reference-format CSV (header first) of `csv_row`s."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(CSV_FIELDS)
    writer.writerows(rows)
    return buffer.getvalue()


def publish_records(temp_dir: Path, records_dir: Path) -> None:
    """Replaces `records_dir` by the complete dataset in `temp_dir` (same parent): a reader
    sees the old dataset, no directory, or the new one, never a mix."""
    old = records_dir.with_name(f'.{records_dir.name}.old')
    shutil.rmtree(old, ignore_errors=True)
    if records_dir.exists():
        os.replace(records_dir, old)
    os.replace(temp_dir, records_dir)
    fsync_directory(os.fspath(records_dir.parent))
    shutil.rmtree(old, ignore_errors=True)


def write_outputs(output_dir: Path, specs: Sequence[ClipSpec], store: FinishedClipStore, *,
                  records_per_shard: int, record_format: str, producer: dict | None,
                  progress: bool) -> tuple[collections.Counter, list[Skip]]:
    """Records (input order) and the CSV of every finished clip of `specs`, from the store.
    Returns the written clips counted by (narration source, from cache), and the clips whose
    store entry was damaged (deleted here, so the next run makes them again)."""
    temp_dir = output_dir / f'.{RECORDS_DIR}.tmp'
    shutil.rmtree(temp_dir, ignore_errors=True)
    sources, damaged, rows, rates = collections.Counter(), [], [], set()
    with DatasetWriter(temp_dir, records_per_shard=records_per_shard, format=record_format,
                       producer=producer) as writer:
        finished = [spec for spec in specs if spec.clip_id in store]
        for spec in tqdm.tqdm(finished, desc='records', unit='clip', disable=not progress):
            try:
                clip = store.get(spec.clip_id)
                writer.add(schema.decode_clip(clip.record, shard=os.fspath(
                    store.path(spec.clip_id)), index=1))
            except (RecordError, ValueError, KeyError, TypeError) as error:
                store.path(spec.clip_id).unlink(missing_ok=True)
                damaged.append(Skip(spec.line, spec.clip_id, 'records', DAMAGED_CLIP,
                                    f'{error}; removed, the next run makes it again'))
                continue
            sources[clip.narration_source, clip.from_cache] += 1
            rows.append(csv_row(clip))
            rates.add(clip.fps)
        writer.fps = single_rate(rates)
    publish_records(temp_dir, output_dir / RECORDS_DIR)
    write_bytes_atomically(os.fspath(output_dir / CSV_NAME), csv_text(rows).encode('utf-8'))
    return sources, damaged


def single_rate(rates: set[float]) -> float | None:
    """The source frame rate for the manifest: one rate for every video is worth recording;
    mixed or unknown (0.0) is not."""
    return next(iter(rates)) if len(rates) == 1 and 0.0 not in rates else None


# ----------------------------------------------------------------------------- runner

def run_fingerprint(csv_path: str | os.PathLike, options: PipelineOptions,
                    narrator: ValidatedNarrator) -> dict:
    """What the finished clips of a run depend on; a restart must match it."""
    with open(csv_path, 'rb') as file:
        table_sha256 = hashlib.sha256(file.read()).hexdigest()
    return {'input_csv': os.path.abspath(csv_path), 'input_sha256': table_sha256,
            'options': json.loads(json.dumps(dataclasses.asdict(options))),
            'narrator': narrator.name, 'model': narrator.model,
            'prompt_version': PROMPT_VERSION}


def claim_work_dir(work_dir: Path, fingerprint: dict) -> None:
    """Records the run's arguments, or checks that a restart uses the same ones."""
    path = work_dir / RUN_NAME
    if path.exists():
        previous = _flattened(json.loads(path.read_text(encoding='utf-8')))
        current = _flattened(fingerprint)
        changed = sorted(key for key in set(previous) | set(current)
                         if previous.get(key) != current.get(key))
        if changed:
            raise ValueError(f'{work_dir} holds clips finished with other arguments (changed: '
                             f'{", ".join(changed)}); use a new output_dir, or delete '
                             f'{work_dir} to start over')
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(os.fspath(path), json.dumps(fingerprint, indent=2).encode())


def _flattened(fingerprint: dict) -> dict:
    """`{'options': {'short_side': 256}}` -> `{'options.short_side': 256}`, so a refusal
    names the field."""
    flat = {}
    for key, value in fingerprint.items():
        if isinstance(value, dict):
            flat.update({f'{key}.{inner}': item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


def run_pipeline(csv_path: str | os.PathLike, output_dir: str | os.PathLike,
                 options: PipelineOptions, narrator: NarratorSpec | Narrator = NarratorSpec(),
                 *, cache_dir: str | os.PathLike | None = None, records_per_shard: int = 256,
                 record_format: str = 'tfrecord', workers: int = 1,
                 producer: dict | None = None, progress: bool = True) -> RunReport:
    """Runs every stage in this process (frames to tracks on `workers` processes), resuming
    from `output_dir`'s finished clips; writes the outputs and returns the report."""
    started = time.monotonic()
    output_dir = Path(output_dir)
    narrator = validated_narrator(narrator)
    work_dir = output_dir / WORK_DIR
    claim_work_dir(work_dir, run_fingerprint(csv_path, options, narrator))
    store = FinishedClipStore(work_dir / 'finished')
    cache = NarrationCache(Path(cache_dir) if cache_dir else output_dir / CACHE_DIR)

    specs, skips, rows = [], [], 0
    for item in read_clip_specs(csv_path, options.default_source):
        rows += 1
        (skips if isinstance(item, Skip) else specs).append(item)
    pending = [spec for spec in specs if spec.clip_id not in store]
    batch_size = 2 * getattr(narrator.primary, 'max_concurrency', 1)

    prepared_bar = tqdm.tqdm(total=len(pending), desc='frames+tracks', unit='clip',
                             disable=not progress)
    narrated_bar = tqdm.tqdm(total=len(pending), desc='narration', unit='clip',
                             disable=not progress)
    processed = 0

    def flush(batch: list[PreparedClip]) -> None:
        nonlocal processed
        for result in narrate_clips(batch, narrator, cache, options.smoothing):
            if isinstance(result, Skip):
                skips.append(result)
            else:
                store.put(result)
                processed += 1
            narrated_bar.update()
        batch.clear()

    batch: list[PreparedClip] = []
    with _prepared_clips(pending, options, workers) as prepared_clips:
        for result in prepared_clips:
            prepared_bar.update()
            if isinstance(result, Skip):
                skips.append(result)
                narrated_bar.total -= 1
                narrated_bar.refresh()
                continue
            batch.append(result)
            if len(batch) >= batch_size:
                flush(batch)
        flush(batch)
    prepared_bar.close()
    narrated_bar.close()

    sources, damaged = write_outputs(output_dir, specs, store,
                                     records_per_shard=records_per_shard,
                                     record_format=record_format, producer=producer,
                                     progress=progress)
    skips = sorted(skips + damaged, key=lambda skip: skip.line)
    seconds = time.monotonic() - started
    report = RunReport(
        runner='inprocess', rows=rows, resumed=len(specs) - len(pending),
        stages=stage_counts(rows, len(specs) - len(pending), skips), skips=skips,
        narrator=narrator_counts(narrator.name, narrator.model, sources),
        clips_written=sum(sources.values()), seconds=round(seconds, 3),
        clips_per_second=round(processed / seconds, 3) if seconds > 0 else 0.0,
        outputs=output_paths(output_dir))
    write_report(output_dir, report)
    return report


def output_paths(output_dir: Path) -> dict[str, str]:
    return {'records': os.fspath(output_dir / RECORDS_DIR),
            'csv': os.fspath(output_dir / CSV_NAME),
            'report': os.fspath(output_dir / 'report.json')}


class _prepared_clips:
    """Context manager over `prepare_or_skip` results for `specs`: in this process, or
    (workers > 1) on spawned worker processes in completion order."""

    def __init__(self, specs: Sequence[ClipSpec], options: PipelineOptions, workers: int):
        self.specs, self.options, self.workers = specs, options, workers
        self.pool = None

    def __enter__(self) -> Iterator[PreparedClip | Skip]:
        # Built here even for the workers: a detector that cannot be built fails the run now,
        # not in a pool that would keep restarting its workers.
        detect = make_clip_detector(self.options)
        if self.workers <= 1 or len(self.specs) <= 1:
            return (prepare_or_skip(spec, self.options, detect) for spec in self.specs)
        # spawn, not fork: the parent may run threads (tqdm, FFmpeg, an HTTP narrator).
        self.pool = multiprocessing.get_context('spawn').Pool(
            min(self.workers, len(self.specs)), initializer=_init_worker,
            initargs=(self.options,))
        return self.pool.imap_unordered(_prepare_in_worker, self.specs, chunksize=1)

    def __exit__(self, *exc_info):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        return False


_WORKER_STATE = {}  # per worker process: the options and the detector built once


def _init_worker(options: PipelineOptions) -> None:
    _WORKER_STATE.update(options=options, detect=make_clip_detector(options))


def _prepare_in_worker(spec: ClipSpec) -> PreparedClip | Skip:
    return prepare_or_skip(spec, _WORKER_STATE['options'], _WORKER_STATE['detect'])
