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

from egovideo_jax.io.choices import check_choice

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/hod.py:VARIANT',
                                          lock_config=True)

RUNNERS = ('inprocess', 'beam')
RECORD_FORMATS = ('tfrecord', 'arrayrecord')
# The config key of each `options.PipelineOptions` and `options.NarratorSpec` field, so an
# `OptionError` names what the user wrote.
CONFIG_KEYS = {
    'video_root': 'video_root', 'detection_source': 'detections.source',
    'detection_root': 'detections.root', 'detection_fps': 'detections.fps',
    'detector': 'detections.detector', 'detector_options.model_path': 'detections.model_path',
    'hand_threshold': 'detections.hand_threshold',
    'object_threshold': 'detections.object_threshold', 'smoothing': 'tracks.smoothing',
    'frames_per_clip': 'frames_per_clip', 'short_side': 'short_side',
    'chunk_seconds': 'chunk_seconds', 'jpeg_quality': 'jpeg_quality',
    'default_source': 'dataset',
    # NarratorSpec
    'name': 'narrator.name', 'retries': 'narrator.retries',
    'options.max_concurrency': 'narrator.concurrency', 'options.base_url': 'narrator.base_url',
    'options.model': 'narrator.model', 'options.model_path': 'narrator.model_path',
}


def validate(config) -> None:
    """ValueError naming the config key for a config the pipeline cannot run: the command's
    own keys here, the pipeline's through `options.PipelineOptions`, `NarratorSpec` and
    `check_runnable`."""
    from egovideo_jax.hod.options import OptionError, check_runnable

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ValueError(f'config.{key}: {message}')

    check(bool(config.output_dir), 'output_dir', 'required: where the outputs go')
    check(config.workers >= 1, 'workers', f'expected >= 1, got {config.workers}')
    check(config.records_per_shard >= 1, 'records_per_shard',
          f'expected >= 1, got {config.records_per_shard}')
    check_choice(config.record_format, RECORD_FORMATS, 'config.record_format')
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
    check_choice(config.runner, RUNNERS, 'config.runner')
    check(config.runner != 'beam' or importlib.util.find_spec('apache_beam') is not None,
          'runner', 'beam needs apache-beam: pip install -r requirements.txt '
                    '-r requirements-hod.txt')
    try:
        check_runnable(pipeline_options(config), narrator_spec(config.narrator))
    except OptionError as error:
        raise ValueError(f'config.{CONFIG_KEYS[error.field]}: {error.reason}') from None
    found = config.ego_filter
    if found.probe:
        check(os.path.isfile(found.probe), 'ego_filter.probe',
              f'the probe file {found.probe!r} does not exist (python -m egovideo_jax.probe '
              f'writes one)')
        from egovideo_jax.hod.ego_filter import check_settings
        try:
            check_settings(found.threshold, found.batch_size)
        except ValueError as error:
            raise ValueError(f'config.{error}') from None


def pipeline_options(config):
    from egovideo_jax.hod.options import PipelineOptions

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
    from egovideo_jax.hod.options import NarratorSpec

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


def ego_filter(section):
    """The `ego_filter.EgoFilter` of `config.ego_filter`, or None without a probe (loads the
    frozen model the probe was trained on)."""
    if not section.probe:
        return None
    from egovideo_jax.hod.ego_filter import EgoFilter
    from egovideo_jax.probe import load_scorer
    scorer = load_scorer(section.probe, section.positive, checkpoint=section.checkpoint,
                         batch_size=section.batch_size)
    return EgoFilter(scorer, section.probe, section.positive, section.threshold,
                     section.batch_size)


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
                      record_format=config.record_format, producer=producer,
                      ego_filter=ego_filter(config.ego_filter))
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
