"""CSV files read row by row: every row with its line number (`csv_records`), rows checked
against a header (`read_csv_rows`), and `HH:MM:SS.ff` timestamps."""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence

_TIMESTAMP = re.compile(r'(\d+):(\d{2}):(\d{2}(?:\.\d*)?)')


@dataclasses.dataclass(frozen=True)
class CsvRow:
    line: int  # where the row ends in the file, 1-based
    fields: tuple[str, ...]


def csv_records(path: str | os.PathLike) -> Iterator[CsvRow]:
    """Every row of the UTF-8 CSV file, header and blank lines (no fields) included."""
    with open(path, newline='', encoding='utf-8') as file:
        reader = csv.reader(file)
        for fields in reader:
            yield CsvRow(reader.line_num, tuple(fields))


def read_csv_rows(path: str | os.PathLike, columns: Sequence[str]
                  ) -> Iterator[tuple[str, dict[str, str]]]:
    """`(source, {column: value})` per data row; `source` is 'FILE, line N'. The header must
    hold `columns` (others are ignored); rows must have as many fields as the header."""
    rows = csv_records(path)
    header = next(rows, None)
    if header is None:
        raise ValueError(f'{path}: empty file; expected a header with {list(columns)}')
    missing = [column for column in columns if column not in header.fields]
    if missing:
        raise ValueError(f'{path}, line 1: header lacks columns {missing}; expected '
                         f'{list(columns)}')
    for row in rows:
        source = f'{path}, line {row.line}'
        if not row.fields:
            continue
        if len(row.fields) != len(header.fields):
            raise ValueError(f'{source}: {len(row.fields)} fields, the header has '
                             f'{len(header.fields)}')
        yield source, dict(zip(header.fields, row.fields))


def parse_timestamp(text: str) -> float:
    """`HH:MM:SS.ff` -> seconds."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if not match:
        raise ValueError(f'timestamp {text!r} is not HH:MM:SS.ff')
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
