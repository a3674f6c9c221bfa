"""The clips stage of the HOD pipeline: the narration table's rows as `ClipSpec`s, and
`ClipSkipped`, how any stage turns a clip it cannot pass into a `report.Skip`.

Tables are the reference format (`video_id,start_second,end_second,text[,dataset]`, header
optional; rows read and checked by `records.convert_csv`, so a row gets the clip id
`records convert` gives it) or EPIC-KITCHENS-100 annotation CSVs (a header naming
`EPIC_COLUMNS` among others; timestamps `HH:MM:SS.ff`; dataset `epic`).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from egovideo_jax.hod.report import Skip
from egovideo_jax.io.csv_rows import CsvRow, csv_records, parse_timestamp
from egovideo_jax.records import convert_csv

EPIC_COLUMNS = ('video_id', 'start_timestamp', 'stop_timestamp', 'narration')

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


def parse_row(row: CsvRow, default_source: str) -> ClipSpec:
    try:
        clip = convert_csv.parse_row(row, default_source)
    except convert_csv.BadRow as error:
        raise ClipSkipped('clips', error.reason, error.detail) from None
    return ClipSpec(row.line, convert_csv.clip_id_for(clip.video_id, clip.start, clip.end,
                                                      row.line),
                    clip.video_id, clip.start, clip.end, clip.text, clip.source)


def read_clip_specs(csv_path: str | os.PathLike,
                    default_source: str = convert_csv.DEFAULT_SOURCE
                    ) -> Iterator[ClipSpec | Skip]:
    """The table's clips in order; a row that is not a clip comes as a Skip."""
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


def _epic_rows(csv_path: str | os.PathLike) -> list[CsvRow | Skip] | None:
    """The rows of an EPIC-KITCHENS-100 annotation CSV in the reference form, or None when
    the table is not one."""
    records = csv_records(csv_path)
    header = next(records, None)
    if header is None or not set(EPIC_COLUMNS) <= set(header.fields):
        return None
    columns = [header.fields.index(name) for name in EPIC_COLUMNS]
    rows = []
    for record in records:
        line, fields = record.line, record.fields
        if not fields:
            continue
        if len(fields) != len(header.fields):
            rows.append(Skip(line, f'line {line} ({fields[0]})', 'clips', MALFORMED_ROW,
                             f'expected {len(header.fields)} fields as in the header, got '
                             f'{len(fields)}'))
            continue
        video_id, start, stop, narration = (fields[column] for column in columns)
        try:
            start, stop = parse_timestamp(start), parse_timestamp(stop)
        except ValueError as error:
            rows.append(Skip(line, f'line {line} ({video_id})', 'clips', BAD_TIMES, str(error)))
            continue
        rows.append(CsvRow(line, (video_id, repr(start), repr(stop), narration, 'epic')))
    return rows
