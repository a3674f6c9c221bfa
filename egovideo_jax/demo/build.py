"""The embedded demo dataset: the procedural source rendered per split and run through the
HOD pipeline (`epic` detections, `rules` narrator), and a training config pointed at it."""
from __future__ import annotations

import json
import os
from pathlib import Path

from egovideo_jax.demo import source
from egovideo_jax.demo.finetune import label_demo_splits
from egovideo_jax.hod.options import NarratorSpec, PipelineOptions
from egovideo_jax.hod.pipeline import run_pipeline
from egovideo_jax.io.atomic import write_json_atomically

DEMO_MANIFEST = 'demo_manifest.json'
DEMO_SPLITS = ('train', 'heldout')


def build_demo_dataset(output_dir: str | os.PathLike, train_clips: int = 600,
                       heldout_clips: int = 200, seed: int = 0, *, size: int = 144,
                       workers: int = 1, records_per_shard: int = 256,
                       progress: bool = True, num_objects: int = 0) -> dict[str, str]:
    """The embedded demo dataset: renders the procedural source for both splits (objects from
    `actions.demo_objects(num_objects)`, 0: all 30) under
    `output_dir/source/{split}`, then runs the HOD pipeline on it (`epic` detections, `rules`
    narrator) into `output_dir/{split}`. Every source frame is stored (45 at 15 fps over 3 s),
    so the trainer samples from the rendered frames themselves.

    Returns paths: `train` / `heldout` (record directories), `{split}_csv`, `{split}_report`,
    `{split}_actions` (labels of the fast-motion evaluation), `manifest`. Idempotent: when
    `output_dir/demo_manifest.json` exists for the same arguments it returns its paths at
    once (ValueError when it was built with other ones); an interrupted build resumes.
    """
    output_dir = Path(output_dir)
    arguments = {'train_clips': train_clips, 'heldout_clips': heldout_clips, 'seed': seed,
                 'size': size, 'num_objects': num_objects}
    manifest_path = output_dir / DEMO_MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
        if manifest['arguments'] != arguments:
            raise ValueError(f'{output_dir} holds a demo dataset built with {manifest["arguments"]}'
                             f', not {arguments}; choose another directory or delete it')
        return manifest['paths']
    paths = {}
    for split, num_clips in zip(DEMO_SPLITS, (train_clips, heldout_clips)):
        source_dir = output_dir / 'source' / split
        num_frames = _render_demo_source(source_dir, num_clips, seed, split, size, workers,
                                         num_objects)
        options = PipelineOptions(
            video_root=os.fspath(source_dir / 'videos'), detection_source='epic',
            detection_root=os.fspath(source_dir / 'detections'), frames_per_clip=num_frames,
            short_side=size)
        report = run_pipeline(source_dir / 'narrations.csv', output_dir / split, options,
                              NarratorSpec('rules'), records_per_shard=records_per_shard,
                              workers=workers, progress=progress,
                              producer={'command': 'egovideo_jax.hod build_demo_dataset',
                                        'split': split, **arguments})
        paths.update({split: report.outputs['records'], f'{split}_csv': report.outputs['csv'],
                      f'{split}_report': report.outputs['report'],
                      f'{split}_actions': os.fspath(source_dir / 'actions.csv')})
    paths['manifest'] = os.fspath(manifest_path)
    write_json_atomically(manifest_path, {'arguments': arguments, 'paths': paths})
    return paths


def _render_demo_source(source_dir: Path, num_clips: int, seed: int, split: str, size: int,
                        workers: int, num_objects: int) -> int:
    """Renders a split (layout of `demo_source`) unless a complete one is there; returns the
    frames per video. A marker written after the source says it is complete."""
    marker = source_dir / '.complete.json'
    arguments = {'num_clips': num_clips, 'seed': seed, 'split': split, 'size': size,
                 'num_objects': num_objects}
    if marker.exists():
        done = json.loads(marker.read_text(encoding='utf-8'))
        if done['arguments'] == arguments:
            return done['num_frames']
    info = source.write_demo_source(source_dir, num_clips, seed, split, size=size,
                                    workers=workers, num_objects=num_objects)
    write_json_atomically(marker, {'arguments': arguments, 'num_frames': info.num_frames})
    return info.num_frames


def prepare_demo_data(config, workdir: Path):
    """Builds the embedded demo dataset through the HOD pipeline if `data.build_demo` is set
    and `data.train` is empty; points `data.train` and the demo evaluators at it. A
    fine-tuning config (`config.task` 'mir' / 'classification') gets the labelled splits
    (demo/finetune.py)."""
    if not config.data.build_demo or config.data.train:
        return
    demo = config.demo
    paths = build_demo_dataset(demo.dir or workdir / 'demo_data', demo.train_clips,
                               demo.heldout_clips, demo.seed, size=demo.size,
                               workers=demo.workers, num_objects=demo.num_objects)
    task = config.get('task', 'contrastive')
    labelled = {}
    if task != 'contrastive':
        labelled = label_demo_splits(paths, demo.num_objects, captions=task == 'mir')
    with config.unlocked():
        config.data.train = labelled.get('train', paths['train'])
        for section in config.evals.values():
            kind = section.get('type')
            if kind in ('demo_retrieval', 'demo_mir'):
                section.records = section.records or paths['heldout']
                section.actions_csv = section.actions_csv or paths['heldout_actions']
            elif kind == 'classification' and labelled:
                section.records = section.records or labelled['heldout']
