"""CSV annotation files: rows checked against a header, and `HH:MM:SS.ff` timestamps."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

_TIMESTAMP = re.compile(r'(\d+):(\d{2}):(\d{2}(?:\.\d*)?)')


def read_csv_rows(path: str | Path, columns: Sequence[str]
                  ) -> Iterator[tuple[str, dict[str, str]]]:
    """`(source, {column: value})` per data row; `source` is 'FILE, line N'. The header must
    hold `columns` (others are ignored); rows must have as many fields as the header."""
    with open(path, newline='', encoding='utf-8') as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise ValueError(f'{path}: empty file; expected a header with {list(columns)}')
        missing = [column for column in columns if column not in header]
        if missing:
            raise ValueError(f'{path}, line 1: header lacks columns {missing}; expected '
                             f'{list(columns)}')
        for row in reader:
            source = f'{path}, line {reader.line_num}'
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f'{source}: {len(row)} fields, the header has {len(header)}')
            yield source, dict(zip(header, row))


def parse_timestamp(text: str) -> float:
    """`HH:MM:SS.ff` -> seconds."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if not match:
        raise ValueError(f'timestamp {text!r} is not HH:MM:SS.ff')
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
