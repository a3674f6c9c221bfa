"""The outputs of a HOD pipeline run under `output_dir`, and their names:

    records/              HOD records (`records.DatasetWriter`, input order), manifest.json
    hod_narrations.csv    video_id,start_second,end_second,text,dataset; `text` is a Python
                          list literal of the clip's HOD narrations
    report.json           `report.RunReport`
    work/                 the runner's state (`pipeline.py`: run.json, finished/)
    cache/                the narration cache (unless `cache_dir` points elsewhere)

Records are published whole (`publish_records`): a reader sees the old dataset, none, or the
new one.
"""
from __future__ import annotations

import collections
import csv
import io
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import tqdm

from egovideo_jax.hod.cache import FinishedClip, FinishedClipStore
from egovideo_jax.hod.clips import DAMAGED_CLIP, ClipSpec
from egovideo_jax.hod.report import REPORT_NAME, Skip
from egovideo_jax.io.atomic import fsync_directory, write_bytes_atomically
from egovideo_jax.records import schema
from egovideo_jax.records.convert_csv import single_rate
from egovideo_jax.records.dataset import DatasetWriter
from egovideo_jax.records.tfrecord import RecordError

CSV_FIELDS = ('video_id', 'start_second', 'end_second', 'text', 'dataset')
RECORDS_DIR, CSV_NAME, WORK_DIR, CACHE_DIR = 'records', 'hod_narrations.csv', 'work', 'cache'


def output_paths(output_dir: Path) -> dict[str, str]:
    return {'records': os.fspath(output_dir / RECORDS_DIR),
            'csv': os.fspath(output_dir / CSV_NAME),
            'report': os.fspath(output_dir / REPORT_NAME)}


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
