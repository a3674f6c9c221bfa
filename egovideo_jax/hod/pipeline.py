"""The HOD narration pipeline, run in this process: `run_pipeline(csv, output_dir, options,
narrator, ...)` takes every clip of a narration table through the stages and writes the
outputs (`beam.py` runs the same stages on Apache Beam).

    clips       `clips.read_clip_specs`: table rows -> `ClipSpec`s
    ego_filter  `ego_filter.apply_filter` (optional): drops clips a probe scores as not
                egocentric
    frames, detections, tracks, narration, records
                `stages.py`, frames to tracks on `workers` processes, narration a batch at a
                time through the narration cache
    outputs     `outputs.write_outputs`: records, hod_narrations.csv; `report.json`

What a run is made with: `options.PipelineOptions` and `options.NarratorSpec`. A clip that
cannot pass a stage (missing or corrupt video, clip outside the video, missing, malformed or
empty detections, malformed row, narrator failure) becomes a `report.Skip` that names the
clip, the stage and the reason; the other clips are not affected.

Besides the outputs (`outputs.py`), a run keeps under `output_dir`:
    work/run.json         the arguments the finished clips were made with
    work/finished/        `cache.FinishedClipStore`: a file per finished clip
A killed run restarted with the same arguments skips its finished clips and writes the
outputs from the store (records swapped in whole), so every clip appears exactly once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import tqdm

from egovideo_jax.hod.cache import FinishedClipStore, NarrationCache
from egovideo_jax.hod.clips import ClipSpec, read_clip_specs
from egovideo_jax.hod.ego_filter import EgoFilter, apply_filter
from egovideo_jax.hod.narrators import Narrator
from egovideo_jax.hod.narrators.validated import ValidatedNarrator
from egovideo_jax.hod.options import NarratorSpec, PipelineOptions, validated_narrator
from egovideo_jax.hod.outputs import CACHE_DIR, WORK_DIR, output_paths, write_outputs
from egovideo_jax.hod.prompt import PROMPT_VERSION
from egovideo_jax.hod.report import RunReport, Skip, build_run_report, write_report
from egovideo_jax.hod.stages import PreparedClip, make_clip_detector, narrate_clips, prepare_or_skip
from egovideo_jax.io.atomic import write_json_atomically

RUN_NAME = 'run.json'


def run_fingerprint(csv_path: str | os.PathLike, options: PipelineOptions,
                    narrator: ValidatedNarrator, ego_filter: EgoFilter | None = None) -> dict:
    """What the finished clips of a run depend on; a restart must match it."""
    with open(csv_path, 'rb') as file:
        table_sha256 = hashlib.sha256(file.read()).hexdigest()
    fingerprint = {'input_csv': os.path.abspath(csv_path), 'input_sha256': table_sha256,
                   'options': json.loads(json.dumps(dataclasses.asdict(options))),
                   'narrator': narrator.name, 'model': narrator.model,
                   'prompt_version': PROMPT_VERSION}
    if ego_filter is not None:
        fingerprint['ego_filter'] = ego_filter.fingerprint()
    return fingerprint


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
    write_json_atomically(path, fingerprint, indent=2)


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
                 producer: dict | None = None, progress: bool = True,
                 ego_filter: EgoFilter | None = None) -> RunReport:
    """Runs every stage in this process (frames to tracks on `workers` processes), resuming
    from `output_dir`'s finished clips; writes the outputs and returns the report. With
    `ego_filter`, clips it drops skip every later stage."""
    started = time.monotonic()
    output_dir = Path(output_dir)
    narrator = validated_narrator(narrator)
    work_dir = output_dir / WORK_DIR
    claim_work_dir(work_dir, run_fingerprint(csv_path, options, narrator, ego_filter))
    store = FinishedClipStore(work_dir / 'finished')
    cache = NarrationCache(Path(cache_dir) if cache_dir else output_dir / CACHE_DIR)

    specs, skips, rows = [], [], 0
    for item in read_clip_specs(csv_path, options.default_source):
        rows += 1
        (skips if isinstance(item, Skip) else specs).append(item)
    # Every clip, finished or not, is in the filter's table (finished ones from its cache).
    kept, dropped, filter_section = apply_filter(specs, options, ego_filter, work_dir,
                                                 output_dir, progress)
    skips += dropped
    pending = [spec for spec in kept if spec.clip_id not in store]
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
    report = build_run_report(
        'inprocess', rows=rows, resumed=len(kept) - len(pending), skips=skips + damaged,
        narrator=narrator, sources=sources, processed=processed, started=started,
        outputs=output_paths(output_dir), ego_filter=filter_section)
    write_report(output_dir, report)
    return report


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
