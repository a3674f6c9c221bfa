"""Reference CSV + mp4 videos -> clip records.

CSV rows: `video_id,start_second,end_second,text[,dataset]`, with or without a header line.
Each row becomes one clip record (`source` = the dataset column, default `csv`;
`text/narration` = the text; no HOD narration; boxes absent). Rows that cannot be converted
are counted by reason and listed in `OUT/skipped.csv`; nothing is dropped silently.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import math
import multiprocessing
import os
from collections.abc import Iterator

import tqdm

from egovideo_jax.records import schema, video_clips
from egovideo_jax.records.dataset import DatasetWriter

SKIPPED_NAME = 'skipped.csv'
DEFAULT_SOURCE = 'csv'
# Skip reasons (the first column of the summary).
MALFORMED, BAD_TIMES, MISSING_VIDEO, DECODE_FAILURE = (
    'malformed row', 'bad times', 'missing video', 'decode failure')


@dataclasses.dataclass(frozen=True)
class CsvRow:
    line: int
    fields: tuple[str, ...]


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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    return len(fields) in (4, 5) and not _is_number(fields[1]) and not _is_number(fields[2])


def read_rows(csv_path) -> Iterator[CsvRow]:
    """Data rows with their line numbers. A first line of 4-5 fields whose two time
    columns are both not numbers is a header; blank lines are ignored."""
    with open(csv_path, newline='', encoding='utf-8') as file:
        reader = csv.reader(file)
        for number, fields in enumerate(reader):
            if not fields or (number == 0 and _is_header(fields)):
                continue
            yield CsvRow(reader.line_num, tuple(fields))


def convert_row(row: CsvRow, options: ClipOptions) -> ConvertedClip | Skip:
    """The clip of one row, or why it is skipped."""
    fields = row.fields

    def skip(reason, detail):
        padded = fields + ('',) * 3
        return Skip(row.line, padded[0], padded[1], padded[2], reason, detail)

    if len(fields) not in (4, 5) or not fields[0]:
        return skip(MALFORMED, f'expected video_id,start_second,end_second,text[,dataset], '
                               f'got {len(fields)} fields')
    video_id, start_text, end_text, text = fields[:4]
    source = (fields[4] if len(fields) == 5 else '') or DEFAULT_SOURCE
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        return skip(BAD_TIMES, f'start/end are not numbers: {start_text!r}, {end_text!r}')
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        return skip(BAD_TIMES, f'need 0 <= start < end, got [{start}, {end})')
    try:
        frames, frame_times, fps = video_clips.read_clip_frames(
            options.video_root, video_id, start, end, options.frames_per_clip,
            options.short_side, options.chunk_seconds)
    except video_clips.MissingVideoError as error:
        return skip(MISSING_VIDEO, str(error))
    except video_clips.ClipOutsideVideoError as error:
        return skip(BAD_TIMES, str(error))
    except (ValueError, OSError) as error:
        return skip(DECODE_FAILURE, str(error))
    return ConvertedClip({
        'clip_id': f'{video_id}:{start:.3f}-{end:.3f}#{row.line}',
        'video_id': video_id,
        'source': source,
        'start': start,
        'end': end,
        'frames_jpeg': [schema.encode_jpeg(frame, options.jpeg_quality) for frame in frames],
        'frame_times': frame_times,
        'narration': text,
        'hod': [],
        **schema.empty_tracks(len(frames)),
    }, fps)


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
    convert = functools.partial(convert_row, options=options)
    skipped: list[Skip] = []
    rates = set()
    num_rows = _count_rows(csv_path)
    writer = DatasetWriter(out_dir, records_per_shard=records_per_shard, format=format,
                           producer=producer)
    try:
        # spawn, not fork: forking a process that runs threads (FFmpeg, tqdm) can deadlock.
        pool = (multiprocessing.get_context('spawn').Pool(workers) if workers > 1
                else _InlinePool())
        with pool:
            results = pool.imap(convert, read_rows(csv_path), chunksize=1)
            bar = tqdm.tqdm(results, total=num_rows, unit='clip', disable=not progress,
                            desc='converting')
            for result in bar:
                if isinstance(result, Skip):
                    skipped.append(result)
                    bar.set_postfix(skipped=len(skipped))
                else:
                    writer.add(result.clip)
                    rates.add(result.source_fps)
    except BaseException:
        writer.abort()
        raise
    # One frame rate for every source video is worth recording; mixed or unknown is not.
    writer.fps = rates.pop() if len(rates) == 1 and 0.0 not in rates else None
    num_clips = len(writer)
    manifest = writer.close()
    write_skipped(os.path.join(out_dir, SKIPPED_NAME), skipped)
    return ConversionSummary(num_rows, num_clips, skipped, manifest)


class _InlinePool:
    """`multiprocessing.Pool`'s imap, in this process (one worker: no pickling cost)."""

    def imap(self, function, iterable, chunksize=1):
        return map(function, iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False
