"""HOD narration pipeline benchmark: clips/s of `run_pipeline` on the embedded demo source.

    python benchmarks/hod_pipeline.py                 # 48 clips, workers 1 and 2, ~20 s on 2 cores
    python benchmarks/hod_pipeline.py --quick --out /tmp/hod_pipeline.json   # 6 clips (the test)

Renders `--clips` clips of the embedded procedural demo source once
(`egovideo_jax.demo.source.write_demo_source`, split `train`: 3 s, 15 fps, `--size` px
mp4 videos and EPIC-format detection pickles), timed on its own (`render`). With
`--source-dir` the source is kept there and reused by later runs with the same arguments.

Then times `egovideo_jax.hod.pipeline.run_pipeline` on it exactly as `demo.build.build_demo_dataset`
calls it (`epic` detections, `NarratorSpec('rules')`, every source frame stored, short side
`--size`), once per `--workers` value (frames to tracks on that many spawned processes; the
worker start-up is part of the run), each `--repeats` times into a fresh output directory (no
resume, empty narration cache). A small untimed warm-up run (`--warmup` clips) comes first.
Wall clips/s counts the clips written over the whole call (reading the table, the stages, the
records, the CSV and the report); CPU s/clip is the CPU time of this process and its reaped
children (the pipeline's worker processes) per clip.

`stages` (unless `--skip-stages`): the same stage functions called one clip after another in
this process (`load_frames`, the EPIC detection lookup, `clip_tracks`, the JPEG encoding of
the frames, the validated `rules` narrator, `finish_clip`'s record encoding), wall and CPU
milliseconds per clip; what `run_pipeline` at workers=1 spends beyond their sum is the
finished-clip store, the cache, the outputs and the bookkeeping.

Prints a table and writes JSON (`--out`) with the machine, the sizes, every run's report
counts (stages in/out/skipped, narrator sources) and the timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine_info import machine, write_results

PACKAGES = ('av', 'numpy', 'pillow')  # versions recorded in the JSON

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/hod_pipeline.py` from a plain checkout
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / 'benchmarks' / 'results' / 'hod_pipeline.json'
FULL = dict(clips=48, warmup=2, repeats=1)
QUICK = dict(clips=6, warmup=1, repeats=1)
SOURCE_MARKER = '.bench_source.json'
SOURCE_VERSION = 1  # bump when the rendered source changes


# ----------------------------------------------------------------------------- measuring

def cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited and been waited for
    (the pipeline's and the renderer's worker pools are joined before they return)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Timer:
    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc_info):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = cpu_seconds() - self.cpu0
        return False


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in Path(path).rglob('*') if file.is_file())


# ----------------------------------------------------------------------------- source

def render_source(source_dir: Path, args) -> dict:
    """Renders the demo source into `source_dir` (or reuses a complete one rendered with the
    same arguments); returns the timing and the source's description."""
    from egovideo_jax.demo import source as demo_source
    from egovideo_jax.io.atomic import write_json_atomically
    arguments = {'version': SOURCE_VERSION, 'clips': args.clips, 'seed': args.seed,
                 'size': args.size, 'split': 'train'}
    marker = source_dir / SOURCE_MARKER
    if marker.exists():
        done = json.loads(marker.read_text(encoding='utf-8'))
        if done['arguments'] == arguments:
            print(f'using the rendered source in {source_dir}', flush=True)
            return {**done['render'], 'cached': True}
    if marker.exists():  # ours, rendered with other arguments
        shutil.rmtree(source_dir)
    elif source_dir.exists() and any(source_dir.iterdir()):
        raise SystemExit(f'--source-dir {source_dir} is not empty and holds no benchmark '
                         f'source ({SOURCE_MARKER}); choose an empty or new directory')
    print(f'rendering {args.clips} demo clips ({args.size} px) into {source_dir} ...',
          flush=True)
    with Timer() as timer:
        info = demo_source.write_demo_source(source_dir, args.clips, args.seed, 'train',
                                             size=args.size, workers=args.render_workers)
    render = {
        'name': f'render w={args.render_workers}', 'clips': len(info.video_ids),
        'seconds': round(timer.wall, 2), 'clips_per_s': round(len(info.video_ids) / timer.wall, 2),
        'cpu_s_per_clip': round(timer.cpu / len(info.video_ids), 4),
        'workers': args.render_workers, 'frames_per_clip': info.num_frames, 'fps': info.fps,
        'size': info.size,
        'videos_mb': round(directory_bytes(info.videos_dir) / 1e6, 2),
        'detections_mb': round(directory_bytes(info.detections_dir) / 1e6, 2),
    }
    write_json_atomically(marker, {'arguments': arguments, 'render': render})
    return {**render, 'cached': False}


def pipeline_options(source_dir: Path, frames_per_clip: int, size: int):
    """The options `build_demo_dataset` runs the pipeline with."""
    from egovideo_jax.hod.options import PipelineOptions
    return PipelineOptions(video_root=os.fspath(source_dir / 'videos'), detection_source='epic',
                           detection_root=os.fspath(source_dir / 'detections'),
                           frames_per_clip=frames_per_clip, short_side=size)


def subset_csv(csv_path: Path, rows: int, out_path: Path) -> Path:
    lines = csv_path.read_text(encoding='utf-8').splitlines(keepends=True)
    out_path.write_text(''.join(lines[:1 + rows]), encoding='utf-8')
    return out_path


# ----------------------------------------------------------------------------- runs

def run_once(csv_path: Path, output_dir: Path, options, workers: int) -> dict:
    from egovideo_jax.hod.options import NarratorSpec
    from egovideo_jax.hod.pipeline import run_pipeline
    shutil.rmtree(output_dir, ignore_errors=True)
    with Timer() as timer:
        report = run_pipeline(csv_path, output_dir, options, NarratorSpec('rules'),
                              workers=workers, progress=False,
                              producer={'command': 'benchmarks/hod_pipeline.py'})
    written = report.clips_written
    return {
        'clips': written, 'skipped': len(report.skips), 'rows': report.rows,
        'seconds': round(timer.wall, 3),
        'clips_per_s': round(written / timer.wall, 3) if timer.wall > 0 else 0.0,
        'cpu_s': round(timer.cpu, 3),
        'cpu_s_per_clip': round(timer.cpu / written, 4) if written else None,
        'report_seconds': report.seconds, 'report_clips_per_s': report.clips_per_second,
        'records_mb': round(directory_bytes(Path(report.outputs['records'])) / 1e6, 2),
        'stages': report.stages, 'narrator': report.narrator,
        'skip_counts': report.skip_counts(),
    }


def bench_pipeline(csv_path: Path, work_dir: Path, options, workers: int,
                   repeats: int) -> dict:
    runs = []  # the median by wall time is reported (the lower one of an even count)
    for repeat in range(repeats):
        runs.append(run_once(csv_path, work_dir / f'w{workers}-{repeat}', options, workers))
        shutil.rmtree(work_dir / f'w{workers}-{repeat}', ignore_errors=True)
    median = sorted(runs, key=lambda run: run['seconds'])[(len(runs) - 1) // 2]
    return {'name': f'pipeline w={workers}', 'workers': workers, 'repeats': repeats,
            **median, 'all_seconds': [run['seconds'] for run in runs]}


def bench_stages(csv_path: Path, options) -> dict:
    """The stage functions one clip after another in this process: wall and CPU ms/clip."""
    from egovideo_jax.hod import stages as hod_stages
    from egovideo_jax.hod.clips import read_clip_specs
    from egovideo_jax.hod.options import NarratorSpec
    from egovideo_jax.hod.report import Skip
    from egovideo_jax.hod.stages import PreparedClip
    from egovideo_jax.records import schema

    narrator = NarratorSpec('rules').build()
    detect = hod_stages.make_clip_detector(options)
    names = ('frames', 'detections', 'tracks', 'jpeg', 'narration', 'record')
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    clips = 0

    def timed(name, function, *arguments):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = function(*arguments)
        wall[name] += time.perf_counter() - wall0
        cpu[name] += time.process_time() - cpu0
        return result

    for spec in read_clip_specs(csv_path, options.default_source):
        if isinstance(spec, Skip):
            continue
        frames, frame_times, fps = timed('frames', hod_stages.load_frames, spec, options)
        detections = timed('detections', detect, spec.video_id, frames, frame_times, fps)
        hod_stages.check_not_empty(detections)
        tracks, facts = timed('tracks', hod_stages.clip_tracks, detections, frame_times,
                              options)
        frames_jpeg = timed('jpeg', lambda: [schema.encode_jpeg(frame, options.jpeg_quality)
                                             for frame in frames])
        [result] = timed('narration', narrator.narrate_checked_many,
                         [(spec.narration, tracks, facts)])
        prepared = PreparedClip(spec, frames_jpeg, frame_times, fps, list(detections), tracks,
                                facts)
        timed('record', hod_stages.finish_clip, prepared, result, False)
        clips += 1
    total_wall, total_cpu = sum(wall.values()), sum(cpu.values())
    return {
        'clips': clips,
        'wall_ms_per_clip': {name: round(1e3 * wall[name] / clips, 2) for name in names},
        'cpu_ms_per_clip': {name: round(1e3 * cpu[name] / clips, 2) for name in names},
        'total_wall_ms_per_clip': round(1e3 * total_wall / clips, 2),
        'total_cpu_ms_per_clip': round(1e3 * total_cpu / clips, 2),
        'clips_per_s': round(clips / total_wall, 2) if total_wall > 0 else 0.0,
    }


# ----------------------------------------------------------------------------- main

def print_table(render: dict, results: list[dict], stages: dict | None) -> None:
    print(f'\n{"setting":<14} {"clips":>6} {"skipped":>7} {"s":>7} {"clips/s":>8} '
          f'{"CPU s/clip":>10}')
    rows = [dict(render, skipped=0)] + results
    for r in rows:
        name = r['name'] + (' (cached)' if r.get('cached') else '')
        cpu = '-' if r['cpu_s_per_clip'] is None else f'{r["cpu_s_per_clip"]:.3f}'
        print(f'{name:<14} {r["clips"]:>6} {r["skipped"]:>7} {r["seconds"]:>7.2f} '
              f'{r["clips_per_s"]:>8.2f} {cpu:>10}')
    if stages:
        print(f'\nstages, one clip after another in this process ({stages["clips"]} clips):')
        print(f'  {"stage":<12} {"wall ms/clip":>12} {"CPU ms/clip":>11}')
        for name, value in stages['wall_ms_per_clip'].items():
            print(f'  {name:<12} {value:>12.2f} {stages["cpu_ms_per_clip"][name]:>11.2f}')
        print(f'  {"sum":<12} {stages["total_wall_ms_per_clip"]:>12.2f} '
              f'{stages["total_cpu_ms_per_clip"]:>11.2f}')
        if 'pipeline_overhead_ms_per_clip' in stages:
            print(f'  run_pipeline w=1 beyond the stages (store, cache, outputs): '
                  f'{stages["pipeline_overhead_ms_per_clip"]:.2f} wall ms/clip, '
                  f'{stages["pipeline_overhead_cpu_ms_per_clip"]:.2f} CPU ms/clip')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 2)[2])
    parser.add_argument('--out', default=str(DEFAULT_OUT), help='JSON results file')
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke run for tests: {QUICK["clips"]} clips')
    parser.add_argument('--clips', type=int, help=f'demo clips (default {FULL["clips"]}; '
                        f'quick {QUICK["clips"]})')
    parser.add_argument('--workers', default='1,2',
                        help='comma-separated run_pipeline worker counts to measure')
    parser.add_argument('--repeats', type=int, help='runs per worker count, the median '
                        f'reported (default {FULL["repeats"]})')
    parser.add_argument('--warmup', type=int, help='clips of the untimed warm-up run '
                        f'(default {FULL["warmup"]}; 0: none)')
    parser.add_argument('--size', type=int, default=144, help='demo frame size in px (the '
                        "demo dataset's 144)")
    parser.add_argument('--render-workers', type=int, default=1,
                        help='processes rendering the source')
    parser.add_argument('--source-dir', help='render the source here and reuse it on later '
                        'runs (default: a temporary directory, removed)')
    parser.add_argument('--work-dir', help='pipeline outputs go under here (default: a '
                        'temporary directory, removed)')
    parser.add_argument('--skip-stages', action='store_true',
                        help='leave out the per-stage breakdown')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
    args.workers = [int(value) for value in args.workers.split(',') if value.strip()]
    if args.clips < 1 or args.repeats < 1 or args.warmup < 0 or not args.workers or min(
            args.workers) < 1 or args.size < 16 or args.size % 2:
        parser.error('--clips and --repeats must be >= 1, --warmup >= 0, --workers >= 1 each, '
                     '--size an even number >= 16')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    temp = tempfile.mkdtemp(prefix='hod_pipeline_bench-')
    try:
        source_dir = Path(args.source_dir) if args.source_dir else Path(temp) / 'source'
        work_dir = Path(args.work_dir) if args.work_dir else Path(temp) / 'runs'
        work_dir.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        render = render_source(source_dir, args)
        options = pipeline_options(source_dir, render['frames_per_clip'], args.size)
        csv_path = source_dir / 'narrations.csv'

        if args.warmup:
            print(f'warm-up: {args.warmup} clips ...', flush=True)
            run_once(subset_csv(csv_path, args.warmup, work_dir / 'warmup.csv'),
                     work_dir / 'warmup', options, workers=1)
            shutil.rmtree(work_dir / 'warmup', ignore_errors=True)

        results = []
        for workers in args.workers:
            print(f'measuring run_pipeline, workers={workers} ...', flush=True)
            results.append(bench_pipeline(csv_path, work_dir, options, workers, args.repeats))
        stages = None
        if not args.skip_stages:
            print('measuring the stages one clip after another ...', flush=True)
            stages = bench_stages(csv_path, options)
            serial = next((r for r in results if r['workers'] == 1), None)
            if serial and serial['clips']:
                stages['pipeline_overhead_ms_per_clip'] = round(
                    1e3 * serial['seconds'] / serial['clips'] - stages['total_wall_ms_per_clip'],
                    2)
                stages['pipeline_overhead_cpu_ms_per_clip'] = round(
                    1e3 * serial['cpu_s_per_clip'] - stages['total_cpu_ms_per_clip'], 2)
        print_table(render, results, stages)

        report = {
            'benchmark': 'hod_pipeline',
            'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%dT%H:%M:%SZ'),
            'command': ' '.join(['python', 'benchmarks/hod_pipeline.py',
                                 *(argv if argv is not None else sys.argv[1:])]),
            'quick': args.quick,
            'machine': {**machine(PACKAGES), 'load_average_1m_before': round(load_before[0], 2),
                        'load_average_1m_after': round(os.getloadavg()[0], 2)},
            'sizes': {'clips': args.clips, 'size': args.size, 'seed': args.seed,
                      'frames_per_clip': render['frames_per_clip'], 'fps': render['fps'],
                      'warmup': args.warmup, 'repeats': args.repeats,
                      'detection_source': 'epic', 'narrator': 'rules'},
            'render': render,
            'settings': results,
            'stages': stages,
        }
        write_results(args.out, report)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == '__main__':  # the pipeline's spawned workers import this module: keep the guard
    sys.exit(main())
