"""Writes the embedded demo source: rendered clips (`synthetic.py`) as the files a real
egocentric source would have; with `view='side'` the same scenes from a static third-person
camera (video ids `demo_{split}_side_{index:05d}`).

Layout under `out_dir`:
    videos/{video_id}.mp4        H.264 (MPEG-4 Part 2 where libx264 is missing), yuv420p
    detections/{video_id}.pkl    ground-truth boxes, EPIC-KITCHENS-100 pickle format
    narrations.csv               video_id,start_second,end_second,text,dataset
                                 (one Ego4D-style narration spanning each whole video)
    actions.csv                  video_id,action,hand,object,fast_motion_only,direction,seed,
                                 view (the labels the fast-motion evaluation needs; the view
                                 for an ego-vs-third-person probe)
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import multiprocessing
import os
from pathlib import Path

import av
import numpy as np

from egovideo_jax.demo.actions import ActionSpec, sample_action_specs
from egovideo_jax.demo.synthetic import VIEWS, render_clip
from egovideo_jax.hod.epic_detections import write_epic_pickle
from egovideo_jax.io.choices import check_choice

SPLITS = ('train', 'heldout')
DATASET_NAME = 'demo'
NARRATION_FIELDS = ('video_id', 'start_second', 'end_second', 'text', 'dataset')
ACTION_FIELDS = ('video_id', 'action', 'hand', 'object', 'fast_motion_only', 'direction', 'seed',
                 'view')


@dataclasses.dataclass(frozen=True)
class DemoSourceInfo:
    root: Path
    split: str
    video_ids: tuple[str, ...]
    videos_dir: Path
    detections_dir: Path
    narrations_csv: Path
    actions_csv: Path
    fps: float
    num_frames: int  # per video
    size: int
    view: str


def clip_seed(seed: int, split: str, index: int) -> int:
    """Render seed of clip `index`: even for train, odd for heldout, so the splits never share
    a scene whatever `seed` and the clip counts."""
    base = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    return 2 * base + SPLITS.index(split)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """uint8 RGB `[T, H, W, 3]` (even H and W) as an mp4 that decodes to `T` frames."""
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    options = {'crf': '17', 'preset': 'veryfast'} if codec == 'libx264' else {'qscale': '2'}
    with av.open(os.fspath(path), mode='w') as container:
        stream = container.add_stream(codec, rate=round(fps), options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.thread_count = 1  # tiny frames; parallelism is across clips
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())


def _write_clip(job: tuple[str, ActionSpec, int, Path, int, float, float, float, str]
                ) -> tuple[str, ActionSpec, int, int]:
    video_id, spec, seed, root, size, fps, seconds, miss_rate, view = job
    clip = render_clip(spec, seed, size=size, fps=fps, seconds=seconds, miss_rate=miss_rate,
                       view=view)
    write_video(root / 'videos' / f'{video_id}.mp4', clip.frames, fps)
    write_epic_pickle(root / 'detections' / f'{video_id}.pkl', video_id, clip.detections)
    return video_id, spec, seed, len(clip.frames)


def write_demo_source(out_dir: str | os.PathLike, num_clips: int, seed: int, split: str,
                      size: int = 144, fps: float = 15, seconds: float = 3.0,
                      miss_rate: float = 0.05, workers: int = 1,
                      num_objects: int = 0, view: str = 'ego') -> DemoSourceInfo:
    """Renders `num_clips` clips of `split` ('train' or 'heldout') into `out_dir` (layout in
    the module docstring), on `workers` processes, drawing objects from
    `actions.demo_objects(num_objects)` (0: all 30), seen from `view` (one of
    `synthetic.VIEWS`). Deterministic in the arguments except `workers`; clip `index` shows
    the same scene in every view. Video ids are `demo_{split}_{index:05d}` ('ego') or
    `demo_{split}_side_{index:05d}` ('side'), so the views can share a dataset."""
    check_choice(split, SPLITS, 'split')
    check_choice(view, VIEWS, 'view')
    if num_clips < 1:
        raise ValueError(f'num_clips: expected >= 1, got {num_clips}')
    if fps != round(fps):
        raise ValueError(f'fps: expected a whole number of frames per second, got {fps}')
    root = Path(out_dir)
    for folder in ('videos', 'detections'):
        (root / folder).mkdir(parents=True, exist_ok=True)
    specs = sample_action_specs(num_clips, seed=seed * len(SPLITS) + SPLITS.index(split),
                                num_objects=num_objects)
    prefix = f'demo_{split}_' if view == 'ego' else f'demo_{split}_{view}_'
    jobs = [(f'{prefix}{index:05d}', spec, clip_seed(seed, split, index), root, size, fps,
             seconds, miss_rate, view) for index, spec in enumerate(specs)]
    if workers > 1:
        # Spawned workers: the caller may hold JAX or other threads a fork would copy.
        with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            written = list(pool.map(_write_clip, jobs, chunksize=4))
    else:
        written = [_write_clip(job) for job in jobs]

    num_frames = written[0][3]
    narrations_csv, actions_csv = root / 'narrations.csv', root / 'actions.csv'
    with open(narrations_csv, 'w', newline='', encoding='utf-8') as file:
        writer = csv.writer(file)
        writer.writerow(NARRATION_FIELDS)
        for video_id, spec, _, frames in written:
            writer.writerow([video_id, '0.000', f'{frames / fps:.3f}', spec.narration,
                             DATASET_NAME])
    with open(actions_csv, 'w', newline='', encoding='utf-8') as file:
        writer = csv.writer(file)
        writer.writerow(ACTION_FIELDS)
        for video_id, spec, clip_seed_value, _ in written:
            writer.writerow([video_id, spec.action, spec.hand, spec.object,
                             int(spec.fast_motion_only), spec.direction or '', clip_seed_value,
                             view])
    return DemoSourceInfo(root, split, tuple(job[0] for job in jobs), root / 'videos',
                          root / 'detections', narrations_csv, actions_csv, float(fps),
                          num_frames, size, view)
