"""HOD narration pipeline command:

    python -m egovideo_jax.hod --config=configs/hod.py:VARIANT --config.output_dir=DIR \\
        [--config.input_csv=... --config.video_root=... --config.detections.root=...]

Variants and fields: `configs/hod.py`. Progress bars while it runs, the summary table at the
end (also in DIR/report.json), and `config.visualize` sample clips rendered to DIR/visual.
Re-running the same command resumes: finished clips are not made again. Exit status 1 with a
message naming the field when the config is not usable.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys

from absl import app, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/hod.py:VARIANT',
                                          lock_config=True)

RUNNERS = ('inprocess', 'beam')
RECORD_FORMATS = ('tfrecord', 'arrayrecord')
DETECTOR_PACKAGES = {'mediapipe': 'mediapipe', 'onnx': 'onnxruntime'}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def validate(config) -> None:
    """ValueError naming the field for a config the pipeline cannot run."""
    from egovideo_jax.hod import detectors, pipeline
    from egovideo_jax.hod.narrators import available_narrators

    def check(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ValueError(f'config.{field}: {message}')

    check(bool(config.output_dir), 'output_dir', 'required: where the outputs go')
    check(config.workers >= 1, 'workers', f'expected >= 1, got {config.workers}')
    check(config.records_per_shard >= 1, 'records_per_shard',
          f'expected >= 1, got {config.records_per_shard}')
    check(config.record_format in RECORD_FORMATS, 'record_format',
          f'expected one of {RECORD_FORMATS}, got {config.record_format!r}')
    check(config.visualize >= 0, 'visualize', f'expected >= 0, got {config.visualize}')
    if config.build_demo:
        demo = config.demo
        check(demo.train_clips >= 1 and demo.heldout_clips >= 1, 'demo',
              f'train_clips and heldout_clips must be >= 1, got {demo.train_clips}, '
              f'{demo.heldout_clips}')
        check(demo.size >= 16 and demo.size % 2 == 0, 'demo.size',
              f'expected an even number of pixels >= 16, got {demo.size}')
        return
    check(os.path.isfile(config.input_csv), 'input_csv',
          f'the narration table {config.input_csv!r} does not exist')
    check(os.path.isdir(config.video_root), 'video_root',
          f'{config.video_root!r} is not a directory')
    check(config.frames_per_clip >= 1, 'frames_per_clip',
          f'expected >= 1, got {config.frames_per_clip}')
    check(config.short_side >= 16, 'short_side', f'expected >= 16, got {config.short_side}')
    check(config.chunk_seconds > 0, 'chunk_seconds', f'expected > 0, got {config.chunk_seconds}')
    check(config.runner in RUNNERS, 'runner',
          f'expected one of {RUNNERS}, got {config.runner!r}')
    check(config.runner != 'beam' or _installed('apache_beam'), 'runner',
          'beam needs apache-beam: pip install -r requirements.txt -r requirements-hod.txt')
    found = config.detections
    check(found.source in pipeline.DETECTION_SOURCES, 'detections.source',
          f'expected one of {pipeline.DETECTION_SOURCES}, got {found.source!r}')
    if found.source == 'detector':
        check(found.detector in detectors.FRAME_DETECTORS, 'detections.detector',
              f'expected one of {sorted(detectors.FRAME_DETECTORS)}, got {found.detector!r}')
        check(_installed(DETECTOR_PACKAGES[found.detector]), 'detections.detector',
              f'{found.detector} needs {DETECTOR_PACKAGES[found.detector]}: '
              f'{detectors.INSTALL_HINT}')
        check(found.detector != 'onnx' or os.path.isfile(found.model_path),
              'detections.model_path', f'the onnx detector needs its model file, '
                                       f'{found.model_path!r} does not exist')
    else:
        check(os.path.isdir(found.root), 'detections.root',
              f'the {found.source} detection files: {found.root!r} is not a directory')
    for field in ('hand_threshold', 'object_threshold'):
        check(0 <= found[field] <= 1, f'detections.{field}',
              f'expected a score in [0, 1], got {found[field]}')
    check(found.fps >= 0, 'detections.fps', f'expected >= 0 (0: the video\'s), got {found.fps}')
    smoothing = config.tracks.smoothing
    check(smoothing == 0 or (smoothing > 0 and smoothing % 2 == 1), 'tracks.smoothing',
          f'expected 0 (off) or an odd window, got {smoothing}')
    narrator = config.narrator
    check(narrator.name in available_narrators(), 'narrator.name',
          f'expected one of {available_narrators()}, got {narrator.name!r}')
    check(narrator.retries >= 0, 'narrator.retries', f'expected >= 0, got {narrator.retries}')
    check(narrator.concurrency >= 1, 'narrator.concurrency',
          f'expected >= 1, got {narrator.concurrency}')
    if narrator.name == 'openai':
        check(bool(narrator.base_url), 'narrator.base_url', 'required by the openai narrator')
        check(bool(narrator.model), 'narrator.model', 'required by the openai narrator: the '
                                                      "served model's name")
    if narrator.name == 'llama_cpp':
        check(_installed('llama_cpp'), 'narrator.name',
              'llama_cpp needs llama-cpp-python: pip install -r requirements-hod-llm.txt')
        check(os.path.isfile(narrator.model_path), 'narrator.model_path',
              f'the llama_cpp narrator needs a GGUF file; {narrator.model_path!r} does not '
              'exist')


def pipeline_options(config):
    from egovideo_jax.hod.pipeline import PipelineOptions

    found = config.detections
    detector_options = (('model_path', found.model_path),) if found.detector == 'onnx' else ()
    return PipelineOptions(
        video_root=config.video_root, detection_source=found.source,
        detection_root=found.root, detection_fps=found.fps, detector=found.detector,
        detector_options=detector_options, hand_threshold=found.hand_threshold,
        object_threshold=found.object_threshold, smoothing=config.tracks.smoothing,
        frames_per_clip=config.frames_per_clip, short_side=config.short_side,
        chunk_seconds=config.chunk_seconds, jpeg_quality=config.jpeg_quality,
        default_source=config.dataset)


def narrator_spec(narrator):
    """The back-end's constructor options from `config.narrator`."""
    from egovideo_jax.hod.pipeline import NarratorSpec

    if narrator.name == 'openai':
        options = dict(base_url=narrator.base_url, model=narrator.model,
                       api_key_env=narrator.api_key_env or None, timeout=narrator.timeout,
                       max_retries=narrator.http_retries, temperature=narrator.temperature,
                       max_tokens=narrator.max_tokens, max_concurrency=narrator.concurrency,
                       requests_per_second=narrator.requests_per_second or None)
    elif narrator.name == 'llama_cpp':
        options = dict(model_path=narrator.model_path, temperature=narrator.temperature,
                       max_tokens=narrator.max_tokens)
    else:
        options = {}
    return NarratorSpec(narrator.name, tuple(sorted(options.items())), narrator.retries)


def run(config) -> tuple[list, str]:
    """Runs the config; returns the run reports (one per demo split) and the records to
    take the visual check from."""
    from egovideo_jax.hod import pipeline, report

    producer = {'command': 'python -m egovideo_jax.hod', 'argv': sys.argv[1:],
                'config': config.to_dict()}
    if config.build_demo:
        from egovideo_jax.demo import build
        demo = config.demo
        paths = build.build_demo_dataset(
            config.output_dir, demo.train_clips, demo.heldout_clips, demo.seed, size=demo.size,
            workers=config.workers, records_per_shard=config.records_per_shard,
            progress=config.progress, num_objects=demo.num_objects)
        reports = [report.read_report(os.path.dirname(paths[f'{split}_report']))
                   for split in build.DEMO_SPLITS]
        records_dir = paths['train']
    else:
        options, narrator = pipeline_options(config), narrator_spec(config.narrator)
        common = dict(cache_dir=config.cache_dir or None,
                      records_per_shard=config.records_per_shard,
                      record_format=config.record_format, producer=producer)
        if config.runner == 'beam':
            from egovideo_jax.hod import beam
            result = beam.run_beam(config.input_csv, config.output_dir, options, narrator,
                                   beam_args=shlex.split(config.beam_args), **common)
        else:
            result = pipeline.run_pipeline(config.input_csv, config.output_dir, options,
                                           narrator, workers=config.workers,
                                           progress=config.progress, **common)
        reports = [result]
        records_dir = result.outputs['records']
    return reports, records_dir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Beam's workers log every bundle at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError('--config=configs/hod.py:VARIANT is required')
    try:
        validate(config)
    except ValueError as error:
        sys.exit(f'configs/hod.py:{config.variant}: {error}')
    reports, records_dir = run(config)
    for report in reports:
        print(report.summary())
    if config.visualize:
        from egovideo_jax.hod import visualize
        index = visualize.render_records(records_dir, os.path.join(config.output_dir, 'visual'),
                                         num=config.visualize)
        print(f'  visual check: {index}')


if __name__ == '__main__':
    app.run(main)
