"""Reference CSV + mp4 videos -> clip records.

CSV rows: `video_id,start_second,end_second,text[,dataset]`, with or without a header line.
Each row becomes one clip record (`source` = the dataset column, default `csv`;
`text/narration` = the text; no HOD narration; boxes absent). Rows that cannot be converted
are counted by reason and listed in `OUT/skipped.csv`; nothing is dropped silently.

The table's rows and their checks (`read_rows`, `parse_row`, `clip_id_for`) are the HOD
pipeline's too, so both give a row the same clip and clip id.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tqdm

from egovideo_jax.io.csv_rows import CsvRow, csv_records
from egovideo_jax.records import schema, video_clips
from egovideo_jax.records.dataset import DatasetWriter

SKIPPED_NAME = 'skipped.csv'
DEFAULT_SOURCE = 'csv'
# Skip reasons (the first column of the summary).
MALFORMED, BAD_TIMES, MISSING_VIDEO, DECODE_FAILURE = (
    'malformed row', 'bad times', 'missing video', 'decode failure')


@dataclasses.dataclass(frozen=True)
class Skip:
    line: int
    video_id: str
    start: str
    end: str
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    video_root: str
    frames_per_clip: int
    short_side: int
    chunk_seconds: float
    jpeg_quality: int


@dataclasses.dataclass(frozen=True)
class ConvertedClip:
    clip: dict
    source_fps: float  # 0.0 when the video does not say


@dataclasses.dataclass
class ConversionSummary:
    num_rows: int
    num_clips: int
    skipped: list[Skip]
    manifest: dict

    @property
    def skipped_fraction(self) -> float:
        return len(self.skipped) / self.num_rows if self.num_rows else 0.0

    def skip_counts(self) -> dict[str, int]:
        return dict(collections.Counter(skip.reason for skip in self.skipped).most_common())


class BadRow(ValueError):
    """A row that is not a clip: `reason` is one of the skip reasons above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class ClipRow:
    """A reference-format row, checked: fields stripped, times as seconds."""
    line: int
    video_id: str
    start: float
    end: float
    text: str
    source: str  # the dataset column, or the default


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(fields: tuple[str, ...]) -> bool:
    return len(fields) in (4, 5) and not _is_number(fields[1]) and not _is_number(fields[2])


def read_rows(csv_path) -> Iterator[CsvRow]:
    """Data rows with their line numbers. A first line of 4-5 fields whose two time
    columns are both not numbers is a header; blank lines are ignored."""
    for row in csv_records(csv_path):
        if row.fields and not (row.line == 1 and _is_header(row.fields)):
            yield row


def parse_row(row: CsvRow, default_source: str = DEFAULT_SOURCE) -> ClipRow:
    """The clip a `video_id,start_second,end_second,text[,dataset]` row names; `BadRow` with
    the skip reason when it names none."""
    fields = row.fields
    if len(fields) not in (4, 5) or not fields[0].strip():
        raise BadRow(MALFORMED, f'expected video_id,start_second,end_second,text[,dataset], '
                                f'got {len(fields)} fields')
    video_id, start_text, end_text, text = (field.strip() for field in fields[:4])
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        raise BadRow(BAD_TIMES, f'start/end are not numbers: {start_text!r}, '
                                f'{end_text!r}') from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise BadRow(BAD_TIMES, f'need 0 <= start < end, got [{start}, {end})')
    source = (fields[4].strip() if len(fields) == 5 else '') or default_source
    return ClipRow(row.line, video_id, start, end, text, source)


def clip_id_for(video_id: str, start: float, end: float, line: int) -> str:
    """The clip id of a table row: `records convert` and the HOD pipeline give the same."""
    return f'{video_id}:{start:.3f}-{end:.3f}#{line}'


def single_rate(rates: set[float]) -> float | None:
    """The source frame rate for the manifest: one rate for every video is worth recording;
    mixed or unknown (0.0) is not."""
    return next(iter(rates)) if len(rates) == 1 and 0.0 not in rates else None


def read_frames(function, *args) -> tuple[list, np.ndarray, float]:
    """`function(*args)`, a `video_clips` frame reader; BadRow with the skip reason (missing
    video, bad times, decode failure) when it fails. Shared by every converter."""
    try:
        return function(*args)
    except video_clips.MissingVideoError as error:
        raise BadRow(MISSING_VIDEO, str(error)) from None
    except video_clips.ClipOutsideVideoError as error:
        raise BadRow(BAD_TIMES, str(error)) from None
    except (ValueError, OSError) as error:
        raise BadRow(DECODE_FAILURE, str(error)) from None


def clip_record(*, clip_id: str, video_id: str, source: str, start: float, end: float,
                frames: list, frame_times: np.ndarray, narration: str, jpeg_quality: int,
                **extra) -> dict:
    """The clip dict of decoded frames (JPEG-encoded here), without HOD narrations or
    boxes; `extra` adds fields such as the label block."""
    return {
        'clip_id': clip_id, 'video_id': video_id, 'source': source, 'start': start, 'end': end,
        'frames_jpeg': [schema.encode_jpeg(frame, jpeg_quality) for frame in frames],
        'frame_times': frame_times, 'narration': narration, 'hod': [],
        **schema.empty_tracks(len(frames)), **extra,
    }


def convert_row(row: CsvRow, options: ClipOptions) -> ConvertedClip | Skip:
    """The clip of one row, or why it is skipped."""
    def skip(reason, detail):
        padded = row.fields + ('',) * 3
        return Skip(row.line, padded[0], padded[1], padded[2], reason, detail)

    try:
        clip = parse_row(row)
        frames, frame_times, fps = read_frames(
            video_clips.read_clip_frames, options.video_root, clip.video_id, clip.start,
            clip.end, options.frames_per_clip, options.short_side, options.chunk_seconds)
    except BadRow as error:
        return skip(error.reason, error.detail)
    return ConvertedClip(clip_record(
        clip_id=clip_id_for(clip.video_id, clip.start, clip.end, row.line),
        video_id=clip.video_id, source=clip.source, start=clip.start, end=clip.end,
        frames=frames, frame_times=frame_times, narration=clip.text,
        jpeg_quality=options.jpeg_quality), fps)


def _count_rows(csv_path) -> int:
    return sum(1 for _ in read_rows(csv_path))


def write_skipped(path, skipped: list[Skip]) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as file:
        writer = csv.writer(file)
        writer.writerow(['line', 'video_id', 'start_second', 'end_second', 'reason', 'detail'])
        for skip in skipped:
            writer.writerow(dataclasses.astuple(skip))


def convert_csv(csv_path, video_root, out_dir, *, frames_per_clip: int = 32,
                short_side: int = 256, chunk_seconds: float = 15.0,
                records_per_shard: int = 256, format: str = 'tfrecord',
                jpeg_quality: int = 90, workers: int = 1, producer: dict | None = None,
                progress: bool = True) -> ConversionSummary:
    """Converts every row (in CSV order, decoding in `workers` processes) into a dataset
    directory `out_dir`, plus `out_dir/skipped.csv`."""
    if frames_per_clip < 1 or short_side < 1 or chunk_seconds <= 0 or workers < 1:
        raise ValueError('frames_per_clip, short_side and workers must be >= 1 and '
                         'chunk_seconds > 0')
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f'CSV file {csv_path} does not exist')
    if not os.path.isdir(video_root):
        raise FileNotFoundError(f'video root {video_root} is not a directory')
    options = ClipOptions(os.fspath(video_root), frames_per_clip, short_side, chunk_seconds,
                          jpeg_quality)
    return write_clips(functools.partial(convert_row, options=options), read_rows(csv_path),
                       _count_rows(csv_path), out_dir, workers=workers,
                       records_per_shard=records_per_shard, format=format, producer=producer,
                       progress=progress)


def write_clips(convert: Callable[[Any], ConvertedClip | Skip], items: Iterable,
                num_items: int, out_dir, *, workers: int = 1, records_per_shard: int = 256,
                format: str = 'tfrecord', producer: dict | None = None, progress: bool = True,
                on_clip: Callable[[dict], None] | None = None,
                before_close: Callable[[DatasetWriter], None] | None = None
                ) -> ConversionSummary:
    """The conversion loop of every converter: `convert(item)` for each item, in order, in
    `workers` processes (`convert` must pickle: a module-level function or a partial of one),
    each clip into a `DatasetWriter` at `out_dir`, each Skip counted and listed in
    `out_dir/skipped.csv`. `on_clip(clip)` sees every written clip (for counts);
    `before_close(writer)` writes extra files before the manifest. Nothing is kept when the
    loop raises."""
    skipped: list[Skip] = []
    rates = set()
    writer = DatasetWriter(out_dir, records_per_shard=records_per_shard, format=format,
                           producer=producer)
    try:
        # spawn, not fork: forking a process that runs threads (FFmpeg, tqdm) can deadlock.
        pool = (multiprocessing.get_context('spawn').Pool(workers) if workers > 1
                else _InlinePool())
        with pool:
            results = pool.imap(convert, items, chunksize=1)
            bar = tqdm.tqdm(results, total=num_items, unit='clip', disable=not progress,
                            desc='converting')
            for result in bar:
                if isinstance(result, Skip):
                    skipped.append(result)
                    bar.set_postfix(skipped=len(skipped))
                else:
                    writer.add(result.clip)
                    rates.add(result.source_fps)
                    if on_clip is not None:
                        on_clip(result.clip)
        writer.fps = single_rate(rates)
        if before_close is not None:
            before_close(writer)
    except BaseException:
        writer.abort()
        raise
    num_clips = len(writer)
    manifest = writer.close()
    write_skipped(os.path.join(out_dir, SKIPPED_NAME), skipped)
    return ConversionSummary(num_items, num_clips, skipped, manifest)


class _InlinePool:
    """`multiprocessing.Pool`'s imap, in this process (one worker: no pickling cost)."""

    def imap(self, function, iterable, chunksize=1):
        return map(function, iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False
