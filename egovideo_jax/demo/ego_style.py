"""Offline data for the ego-style filter: the demo's scenes from the head-mounted camera
(`egocentric`) and from a static side camera (`exocentric`), as records to fit the probe on
and as a mixed HOD input to filter.

    python -m egovideo_jax.demo.ego_style --out DIR [--train-clips 64 --heldout-clips 32]

Under DIR:
    source/{split}_{view}/       the rendered source (demo/source.py layout), view ego | side
    {split}_{class}/             records of each source, frames only (`records convert`):
                                 train_egocentric, train_exocentric, heldout_egocentric, ...
    mixed/                       the held-out clips of both views as one HOD input:
                                 narrations.csv, videos/, detections/ (EPIC pickles)
    ego_style.json               these paths and the arguments

Then (docs/hod_pipeline.md, "Ego-style filter"): fit the probe on `train_*` and check it on
`heldout_*` with `python -m egovideo_jax.probe`, and run the HOD pipeline on `mixed/` with
`--config.ego_filter.probe=...`.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from egovideo_jax.demo.source import NARRATION_FIELDS, write_demo_source
from egovideo_jax.io.atomic import write_json_atomically
from egovideo_jax.records.convert_csv import convert_csv

CLASS_OF_VIEW = {'ego': 'egocentric', 'side': 'exocentric'}
MANIFEST_NAME = 'ego_style.json'


def build_ego_style_data(out_dir: str | os.PathLike, train_clips: int = 64,
                         heldout_clips: int = 32, seed: int = 0, *, size: int = 144,
                         frames_per_clip: int = 16, workers: int = 1,
                         progress: bool = True) -> dict[str, str]:
    """Renders both views of both splits, converts them to records and assembles the mixed
    held-out HOD input; returns the paths (also written to `DIR/ego_style.json`)."""
    out_dir = Path(out_dir)
    paths = {}
    for split, num_clips in (('train', train_clips), ('heldout', heldout_clips)):
        for view, name in CLASS_OF_VIEW.items():
            source = out_dir / 'source' / f'{split}_{view}'
            write_demo_source(source, num_clips, seed, split, size=size, workers=workers,
                              view=view)
            records = out_dir / f'{split}_{name}'
            summary = convert_csv(source / 'narrations.csv', source / 'videos', records,
                                  frames_per_clip=frames_per_clip, short_side=size,
                                  workers=workers, progress=progress,
                                  producer={'command': 'egovideo_jax.demo.ego_style',
                                            'view': view, 'split': split})
            if summary.skipped:
                raise RuntimeError(f'{records}: {summary.skipped} rendered clips could not be '
                                   f'converted (see {records / "skipped.csv"})')
            paths[f'{split}_{name}'] = os.fspath(records)
    paths.update(_mixed_input(out_dir / 'mixed', [out_dir / 'source' / f'heldout_{view}'
                                                  for view in CLASS_OF_VIEW]))
    write_json_atomically(out_dir / MANIFEST_NAME, {
        'arguments': {'train_clips': train_clips, 'heldout_clips': heldout_clips,
                      'seed': seed, 'size': size, 'frames_per_clip': frames_per_clip},
        'paths': paths})
    return paths


def _mixed_input(mixed: Path, sources: Sequence[Path]) -> dict[str, str]:
    """One HOD input of several rendered sources (their video ids differ per view)."""
    rows = []
    for folder in ('videos', 'detections'):
        (mixed / folder).mkdir(parents=True, exist_ok=True)
    for source in sources:
        for folder in ('videos', 'detections'):
            for path in sorted((source / folder).iterdir()):
                shutil.copyfile(path, mixed / folder / path.name)
        with open(source / 'narrations.csv', newline='', encoding='utf-8') as file:
            rows += list(csv.DictReader(file))
    with open(mixed / 'narrations.csv', 'w', newline='', encoding='utf-8') as file:
        writer = csv.DictWriter(file, NARRATION_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return {'mixed_csv': os.fspath(mixed / 'narrations.csv'),
            'mixed_videos': os.fspath(mixed / 'videos'),
            'mixed_detections': os.fspath(mixed / 'detections')}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.demo.ego_style',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, metavar='DIR')
    parser.add_argument('--train-clips', type=int, default=64, help='per view')
    parser.add_argument('--heldout-clips', type=int, default=32, help='per view')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, default=144, help='pixels (even, >= 16)')
    parser.add_argument('--frames-per-clip', type=int, default=16, help='stored per record')
    parser.add_argument('--workers', type=int, default=1, help='rendering processes')
    args = parser.parse_args(argv)
    if min(args.train_clips, args.heldout_clips) < 2:
        parser.error('--train-clips and --heldout-clips must be >= 2')
    paths = build_ego_style_data(args.out, args.train_clips, args.heldout_clips, args.seed,
                                 size=args.size, frames_per_clip=args.frames_per_clip,
                                 workers=args.workers)
    for name, path in paths.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
