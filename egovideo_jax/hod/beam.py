"""The HOD pipeline on Apache Beam: the stage functions of `stages.py` as transforms, for
runs too large for one machine (DirectRunner locally; Dataflow, Flink or Spark unchanged, with
`output_dir`, the videos and the detections on a file system every worker mounts).

    clips (read by the launcher) -> Prepare (frames, detections, tracks)
        -> BatchElements -> Narrate (cache, ValidatedNarrator; a batch at a time, so an LLM
           back-end works on several clips at once)
        -> records: each finished clip's rank in input order among the finished clips picks
           its shard (rank // records_per_shard), each shard is written by one worker with
           `records.DatasetWriter`, then one manifest lists them all
        -> hod_narrations.csv (input order), skips and narrator counts for the report

The outputs are the in-process runner's: the same records in the same shards and order, the
same CSV; `report.json` says `runner: beam`. Beam retries failed bundles itself; the
narration cache keeps retries (and re-runs) from asking the narrator again.
`apache-beam` is an optional dependency (`requirements-hod.txt`).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions as BeamOptions

from egovideo_jax.hod.cache import FinishedClip, NarrationCache
from egovideo_jax.hod.clips import ClipSpec, read_clip_specs
from egovideo_jax.hod.ego_filter import EgoFilter, apply_filter
from egovideo_jax.hod.options import NarratorSpec, PipelineOptions
from egovideo_jax.hod.outputs import (
    CACHE_DIR,
    CSV_NAME,
    RECORDS_DIR,
    WORK_DIR,
    csv_row,
    csv_text,
    output_paths,
    publish_records,
)
from egovideo_jax.hod.report import RunReport, Skip, build_run_report, write_report
from egovideo_jax.hod.stages import PreparedClip, make_clip_detector, narrate_clips, prepare_or_skip
from egovideo_jax.io.atomic import write_bytes_atomically, write_json_atomically
from egovideo_jax.records import schema, tfrecord
from egovideo_jax.records.convert_csv import single_rate
from egovideo_jax.records.dataset import MANIFEST_NAME, DatasetWriter, shard_file_name

SKIPPED = 'skipped'
_STATS_NAME = 'beam_stats.json'


class _Prepare(beam.DoFn):
    """Frames, detections and tracks of each clip (the detector is built once per worker)."""

    def __init__(self, options: PipelineOptions):
        self.options = options
        self.detect = None

    def setup(self):
        self.detect = make_clip_detector(self.options)

    def process(self, spec: ClipSpec):
        result = prepare_or_skip(spec, self.options, self.detect)
        yield beam.pvalue.TaggedOutput(SKIPPED, result) if isinstance(result, Skip) else result


class _Narrate(beam.DoFn):
    """Narrates a batch of prepared clips through the cache; yields finished clips."""

    def __init__(self, narrator: NarratorSpec, cache_dir: str, smoothing: int):
        self.narrator_spec, self.cache_dir, self.smoothing = narrator, cache_dir, smoothing
        self.narrator = self.cache = None

    def setup(self):
        self.narrator = self.narrator_spec.build()
        self.cache = NarrationCache(self.cache_dir)

    def process(self, batch: Sequence[PreparedClip]):
        for result in narrate_clips(batch, self.narrator, self.cache, self.smoothing):
            yield beam.pvalue.TaggedOutput(SKIPPED, result) if isinstance(result, Skip) else (
                result)


def _shard_of(clip: FinishedClip, lines: Sequence[int], records_per_shard: int) -> int:
    """The shard the in-process runner puts the clip in: by its rank in input order."""
    return bisect.bisect_left(lines, clip.line) // records_per_shard


def _write_shard(shard_clips: tuple[int, Iterable[FinishedClip]], lines: Sequence[int],
                 records_dir: str, records_per_shard: int, record_format: str,
                 producer: dict) -> dict:
    """Writes one shard under its final name in `records_dir`; returns its manifest (a
    retried bundle rewrites the same shard)."""
    shard, clips = shard_clips
    clips = sorted(clips, key=lambda clip: clip.line)
    num_shards = math.ceil(len(lines) / records_per_shard)
    part_dir = os.path.join(records_dir, f'.part-{shard:05d}')
    shutil.rmtree(part_dir, ignore_errors=True)
    writer = DatasetWriter(part_dir, records_per_shard=len(clips), format=record_format,
                           producer=producer)
    for clip in clips:
        writer.add(schema.decode_clip(clip.record))
    writer.fps = single_rate({clip.fps for clip in clips})
    manifest = writer.close()
    entry = manifest['shards'][0]
    final_name = shard_file_name(manifest['name'], shard, num_shards, record_format)
    written = os.path.join(part_dir, entry['file'])
    if record_format == 'tfrecord':
        tfrecord.publish_shard_as(written, os.path.join(records_dir, final_name))
    else:
        os.replace(written, os.path.join(records_dir, final_name))
    shutil.rmtree(part_dir)
    entry['file'] = final_name
    return manifest


def merge_manifests(parts: Sequence[dict]) -> dict:
    """One dataset manifest from the single-shard manifests of its shards, in shard order."""
    parts = sorted(parts, key=lambda part: part['shards'][0]['file'])
    counts = sorted({count for part in parts for count in (
        part['frames_per_clip'] if isinstance(part['frames_per_clip'], list)
        else [part['frames_per_clip']])})
    sizes = sorted({tuple(size) for part in parts for size in part['frame_sizes']})
    rates = {part['fps'] for part in parts}
    fields = {field for part in parts for field in part['narration_fields']}
    return {
        **parts[0],
        'num_records': sum(part['num_records'] for part in parts),
        'shards': [shard for part in parts for shard in part['shards']],
        'frames_per_clip': counts[0] if len(counts) == 1 else counts,
        'frame_sizes': [list(size) for size in sizes],
        'min_short_side': min((min(size) for size in sizes), default=None),
        'fps': rates.pop() if len(rates) == 1 else None,
        'narration_fields': [field for field in schema.NARRATION_FEATURES if field in fields],
    }


def _write_manifest(parts: list[dict], records_dir: str, record_format: str,
                    producer: dict) -> None:
    if not parts:  # no clip finished: an empty dataset, as DatasetWriter writes it
        DatasetWriter(records_dir, format=record_format, producer=producer).close()
        return
    write_json_atomically(os.path.join(records_dir, MANIFEST_NAME), merge_manifests(parts),
                          indent=2)


def _write_csv(rows: list[tuple[int, list[str]]], path: str) -> None:
    write_bytes_atomically(path, csv_text(
        row for _, row in sorted(rows, key=lambda item: item[0])).encode('utf-8'))


def _write_stats(skips: list[Skip], sources: list[tuple[tuple[str, bool], int]],
                 path: str) -> None:
    write_json_atomically(path, {
        'skips': [dataclasses.asdict(skip) for skip in skips],
        'sources': [[source, from_cache, count] for (source, from_cache), count in sources],
    }, indent=2)


def _read_stats(path: Path) -> tuple[list[Skip], collections.Counter[tuple[str, bool]]]:
    """The skips and the narration sources `_write_stats` left."""
    with open(path, encoding='utf-8') as file:
        stats = json.load(file)
    skips = [Skip(**skip) for skip in stats['skips']]
    sources = collections.Counter({(source, from_cache): count
                                   for source, from_cache, count in stats['sources']})
    return skips, sources


def with_default_runner(beam_args: Sequence[str]) -> list[str]:
    """The DirectRunner unless the arguments name a runner (Beam's own default may need a
    download)."""
    args = list(beam_args)
    if not any(arg == '--runner' or arg.startswith('--runner=') for arg in args):
        args.append('--runner=DirectRunner')
    return args


def run_beam(csv_path: str | os.PathLike, output_dir: str | os.PathLike,
             options: PipelineOptions, narrator: NarratorSpec = NarratorSpec(), *,
             cache_dir: str | os.PathLike | None = None, records_per_shard: int = 256,
             record_format: str = 'tfrecord', producer: dict | None = None,
             beam_args: Sequence[str] = (), ego_filter: EgoFilter | None = None) -> RunReport:
    """Runs the pipeline on Beam and writes the outputs of `pipeline.run_pipeline`. The
    ego-style filter (optional) scores the clips here, before the job: it needs the model."""
    started = time.monotonic()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Built here once, so a bad narrator configuration fails before the job starts.
    checked_narrator = narrator.build()
    items = list(read_clip_specs(csv_path, options.default_source))
    specs = [item for item in items if isinstance(item, ClipSpec)]
    row_skips = [item for item in items if isinstance(item, Skip)]
    temp_dir, work_dir = _fresh_records_dir(output_dir), output_dir / WORK_DIR
    work_dir.mkdir(exist_ok=True)
    specs, dropped, filter_section = apply_filter(specs, options, ego_filter, work_dir,
                                                  output_dir)
    row_skips += dropped
    stats_path = work_dir / _STATS_NAME
    producer = dict(producer or {})

    with beam.Pipeline(options=BeamOptions(with_default_runner(beam_args))) as root:
        prepared, narrated = _prepare_and_narrate(
            root, specs, options, narrator, os.fspath(cache_dir or output_dir / CACHE_DIR),
            batch_size=2 * getattr(checked_narrator.primary, 'max_concurrency', 1))
        _write_records(narrated.clips, os.fspath(temp_dir), records_per_shard, record_format,
                       producer)
        _write_csv_rows(narrated.clips, os.fspath(output_dir / CSV_NAME))
        _write_run_stats(root, row_skips, [prepared[SKIPPED], narrated[SKIPPED]],
                         narrated.clips, os.fspath(stats_path))

    publish_records(temp_dir, output_dir / RECORDS_DIR)
    skips, sources = _read_stats(stats_path)
    report = build_run_report('beam', rows=len(items), resumed=0, skips=skips,
                              narrator=checked_narrator, sources=sources,
                              processed=sum(sources.values()), started=started,
                              outputs=output_paths(output_dir), ego_filter=filter_section)
    write_report(output_dir, report)
    return report


def _fresh_records_dir(output_dir: Path) -> Path:
    """An empty directory the shards are written to before `publish_records`."""
    temp_dir = output_dir / f'.{RECORDS_DIR}.tmp'
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir()
    return temp_dir


def _prepare_and_narrate(root, specs: list[ClipSpec], options: PipelineOptions,
                         narrator: NarratorSpec, cache_dir: str, batch_size: int):
    """The prepared and the narrated clips (`clips` outputs, and `SKIPPED` ones)."""
    prepared = (root
                | 'Clips' >> beam.Create(specs)
                | 'Prepare' >> beam.ParDo(_Prepare(options)).with_outputs(SKIPPED,
                                                                          main='clips'))
    narrated = (prepared.clips
                | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
                | 'Narrate' >> beam.ParDo(_Narrate(narrator, cache_dir, options.smoothing)
                                          ).with_outputs(SKIPPED, main='clips'))
    return prepared, narrated


def _write_records(finished, records_dir: str, records_per_shard: int, record_format: str,
                   producer: dict) -> None:
    """Each clip's shard from its rank in input order; the shards, then the manifest."""
    lines = (finished
             | 'Lines' >> beam.Map(lambda clip: clip.line)
             | 'AllLines' >> beam.combiners.ToList()
             | 'Sorted' >> beam.Map(sorted))
    lines_input = beam.pvalue.AsSingleton(lines)
    (finished
     | 'KeyByShard' >> beam.Map(lambda clip, lines: (
         _shard_of(clip, lines, records_per_shard), clip), lines=lines_input)
     | 'GroupShards' >> beam.GroupByKey()
     | 'WriteShards' >> beam.Map(
         _write_shard, lines=lines_input, records_dir=records_dir,
         records_per_shard=records_per_shard, record_format=record_format, producer=producer)
     | 'AllShards' >> beam.combiners.ToList()
     | 'WriteManifest' >> beam.Map(_write_manifest, records_dir=records_dir,
                                   record_format=record_format, producer=producer))


def _write_csv_rows(finished, path: str) -> None:
    (finished
     | 'CsvRows' >> beam.Map(lambda clip: (clip.line, csv_row(clip)))
     | 'AllRows' >> beam.combiners.ToList()
     | 'WriteCsv' >> beam.Map(_write_csv, path=path))


def _write_run_stats(root, row_skips: list[Skip], skipped: list, finished, path: str) -> None:
    """Every skip (table rows, then the stages' `skipped` outputs) and the narration sources
    of the finished clips, for the report."""
    skips = ((root | 'RowSkips' >> beam.Create(row_skips), *skipped)
             | 'Skips' >> beam.Flatten()
             | 'AllSkips' >> beam.combiners.ToList())
    sources = (finished
               | 'Sources' >> beam.Map(lambda clip: (clip.narration_source, clip.from_cache))
               | 'CountSources' >> beam.combiners.Count.PerElement()
               | 'AllSources' >> beam.combiners.ToList())
    (root
     | 'Once' >> beam.Create([None])
     | 'WriteStats' >> beam.Map(lambda _, skips, sources: _write_stats(skips, sources, path),
                                skips=beam.pvalue.AsSingleton(skips),
                                sources=beam.pvalue.AsSingleton(sources)))
