"""The HOD pipeline on Apache Beam: the stage functions of `pipeline.py` as transforms, for
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

from egovideo_jax.hod import pipeline
from egovideo_jax.hod.cache import FinishedClip, NarrationCache
from egovideo_jax.hod.report import RunReport, Skip, narrator_counts, stage_counts, write_report
from egovideo_jax.records import schema, tfrecord
from egovideo_jax.io.atomic import write_bytes_atomically
from egovideo_jax.records.dataset import MANIFEST_NAME, DatasetWriter, shard_file_name

SKIPPED = 'skipped'
_STATS_NAME = 'beam_stats.json'


class _Prepare(beam.DoFn):
    """Frames, detections and tracks of each clip (the detector is built once per worker)."""

    def __init__(self, options: pipeline.PipelineOptions):
        self.options = options
        self.detect = None

    def setup(self):
        self.detect = pipeline.make_clip_detector(self.options)

    def process(self, spec: pipeline.ClipSpec):
        result = pipeline.prepare_or_skip(spec, self.options, self.detect)
        yield beam.pvalue.TaggedOutput(SKIPPED, result) if isinstance(result, Skip) else result


class _Narrate(beam.DoFn):
    """Narrates a batch of prepared clips through the cache; yields finished clips."""

    def __init__(self, narrator: pipeline.NarratorSpec, cache_dir: str, smoothing: int):
        self.narrator_spec, self.cache_dir, self.smoothing = narrator, cache_dir, smoothing
        self.narrator = self.cache = None

    def setup(self):
        self.narrator = self.narrator_spec.build()
        self.cache = NarrationCache(self.cache_dir)

    def process(self, batch: Sequence[pipeline.PreparedClip]):
        for result in pipeline.narrate_clips(batch, self.narrator, self.cache, self.smoothing):
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
    writer.fps = pipeline.single_rate({clip.fps for clip in clips})
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
    write_bytes_atomically(os.path.join(records_dir, MANIFEST_NAME),
                           (json.dumps(merge_manifests(parts), indent=2) + '\n').encode())


def _write_csv(rows: list[tuple[int, list[str]]], path: str) -> None:
    write_bytes_atomically(path, pipeline.csv_text(
        row for _, row in sorted(rows, key=lambda item: item[0])).encode('utf-8'))


def _write_stats(skips: list[Skip], sources: list[tuple[tuple[str, bool], int]],
                 path: str) -> None:
    write_bytes_atomically(path, json.dumps({
        'skips': [dataclasses.asdict(skip) for skip in skips],
        'sources': [[source, from_cache, count] for (source, from_cache), count in sources],
    }).encode())


def with_default_runner(beam_args: Sequence[str]) -> list[str]:
    """The DirectRunner unless the arguments name a runner (Beam's own default may need a
    download)."""
    args = list(beam_args)
    if not any(arg == '--runner' or arg.startswith('--runner=') for arg in args):
        args.append('--runner=DirectRunner')
    return args


def run_beam(csv_path: str | os.PathLike, output_dir: str | os.PathLike,
             options: pipeline.PipelineOptions,
             narrator: pipeline.NarratorSpec = pipeline.NarratorSpec(), *,
             cache_dir: str | os.PathLike | None = None, records_per_shard: int = 256,
             record_format: str = 'tfrecord', producer: dict | None = None,
             beam_args: Sequence[str] = ()) -> RunReport:
    """Runs the pipeline on Beam and writes the outputs of `pipeline.run_pipeline`."""
    started = time.monotonic()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Built here once, so a bad narrator configuration fails before the job starts.
    checked_narrator = narrator.build()
    items = list(pipeline.read_clip_specs(csv_path, options.default_source))
    specs = [item for item in items if isinstance(item, pipeline.ClipSpec)]
    row_skips = [item for item in items if isinstance(item, Skip)]
    temp_dir = output_dir / f'.{pipeline.RECORDS_DIR}.tmp'
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir()
    work_dir = output_dir / pipeline.WORK_DIR
    work_dir.mkdir(exist_ok=True)
    cache_dir = os.fspath(cache_dir or output_dir / pipeline.CACHE_DIR)
    producer = dict(producer or {})
    batch_size = 2 * getattr(checked_narrator.primary, 'max_concurrency', 1)

    with beam.Pipeline(options=BeamOptions(with_default_runner(beam_args))) as root:
        prepared = (root
                    | 'Clips' >> beam.Create(specs)
                    | 'Prepare' >> beam.ParDo(_Prepare(options)).with_outputs(SKIPPED,
                                                                              main='clips'))
        narrated = (prepared.clips
                    | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
                    | 'Narrate' >> beam.ParDo(_Narrate(narrator, cache_dir, options.smoothing)
                                              ).with_outputs(SKIPPED, main='clips'))
        finished = narrated.clips
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
             _write_shard, lines=lines_input, records_dir=os.fspath(temp_dir),
             records_per_shard=records_per_shard, record_format=record_format,
             producer=producer)
         | 'AllShards' >> beam.combiners.ToList()
         | 'WriteManifest' >> beam.Map(_write_manifest, records_dir=os.fspath(temp_dir),
                                       record_format=record_format, producer=producer))
        (finished
         | 'CsvRows' >> beam.Map(lambda clip: (clip.line, pipeline.csv_row(clip)))
         | 'AllRows' >> beam.combiners.ToList()
         | 'WriteCsv' >> beam.Map(_write_csv, path=os.fspath(output_dir / pipeline.CSV_NAME)))
        skips = ((root | 'RowSkips' >> beam.Create(row_skips), prepared[SKIPPED],
                  narrated[SKIPPED])
                 | 'Skips' >> beam.Flatten()
                 | 'AllSkips' >> beam.combiners.ToList())
        sources = (finished
                   | 'Sources' >> beam.Map(lambda clip: (clip.narration_source, clip.from_cache))
                   | 'CountSources' >> beam.combiners.Count.PerElement()
                   | 'AllSources' >> beam.combiners.ToList())
        (root
         | 'Once' >> beam.Create([None])
         | 'WriteStats' >> beam.Map(lambda _, skips, sources: _write_stats(
             skips, sources, os.fspath(work_dir / _STATS_NAME)),
             skips=beam.pvalue.AsSingleton(skips), sources=beam.pvalue.AsSingleton(sources)))

    pipeline.publish_records(temp_dir, output_dir / pipeline.RECORDS_DIR)
    with open(work_dir / _STATS_NAME, encoding='utf-8') as file:
        stats = json.load(file)
    skips = sorted((Skip(**skip) for skip in stats['skips']), key=lambda skip: skip.line)
    source_counts = collections.Counter({(source, from_cache): count
                                         for source, from_cache, count in stats['sources']})
    written = sum(source_counts.values())
    seconds = time.monotonic() - started
    report = RunReport(
        runner='beam', rows=len(items), resumed=0, stages=stage_counts(len(items), 0, skips),
        skips=skips, narrator=narrator_counts(checked_narrator.name, checked_narrator.model,
                                              source_counts),
        clips_written=written, seconds=round(seconds, 3),
        clips_per_second=round(written / seconds, 3) if seconds > 0 else 0.0,
        outputs=pipeline.output_paths(output_dir))
    write_report(output_dir, report)
    return report
