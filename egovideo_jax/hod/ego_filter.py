"""The ego-style filter: the stage before `frames` that keeps only egocentric-looking clips
(EgoHOD selects HowTo100M clips this way before the HOD pipeline; its classifier and
threshold are not published).

Each pending clip's frames (the `frames` stage's reading) are scored by a `ClipScorer`: the
probability of the probe's `positive` class from a linear probe over frozen video features
(`python -m egovideo_jax.probe` trains one; the command line builds the scorer from
`config.ego_filter`, so this stage needs no model code). Clips scoring under `threshold`
become `Skip`s of the `ego_filter` stage (reason `not egocentric`, the score in the detail);
clips whose video cannot be read are kept, for the `frames` stage to report. Scores are kept
in `work/ego_scores.json` as they are computed, so a restarted run scores only new clips,
and written for every clip to `ego_filter.csv` (clip_id, video_id, start, end, score, kept)
beside the run report, whose `ego_filter` section counts the kept and dropped clips.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tqdm

from egovideo_jax.hod.clips import ClipSkipped, ClipSpec
from egovideo_jax.hod.options import PipelineOptions
from egovideo_jax.hod.report import Skip
from egovideo_jax.hod.stages import load_frames
from egovideo_jax.io.atomic import sha256_file, write_bytes_atomically, write_json_atomically

STAGE = 'ego_filter'
NOT_EGOCENTRIC = 'not egocentric'
SCORES_NAME = 'ego_scores.json'
CSV_NAME = 'ego_filter.csv'
CSV_FIELDS = ('clip_id', 'video_id', 'start', 'end', 'score', 'kept')

# uint8 frames [T, H, W, 3] of each clip -> the probability that each clip is egocentric.
ClipScorer = Callable[[Sequence[np.ndarray]], np.ndarray]


def check_settings(threshold: float, batch_size: int) -> None:
    """ValueError naming the `ego_filter.` field that cannot be used (the command line checks
    its config with this before loading the model)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f'ego_filter.threshold: expected a probability in [0, 1], got '
                         f'{threshold}')
    if batch_size < 1:
        raise ValueError(f'ego_filter.batch_size: expected >= 1, got {batch_size}')


@dataclasses.dataclass(frozen=True)
class EgoFilter:
    scorer: ClipScorer
    probe: str  # the probe file the scorer applies (its hash goes into the run fingerprint)
    positive: str = 'egocentric'
    threshold: float = 0.5
    batch_size: int = 8

    def __post_init__(self):
        check_settings(self.threshold, self.batch_size)

    def fingerprint(self) -> dict:
        return {'probe_sha256': sha256_file(self.probe), 'positive': self.positive,
                'threshold': self.threshold}


def _read_scores(path: Path) -> dict[str, float]:
    return json.loads(path.read_text(encoding='utf-8')) if path.exists() else {}


def score_clips(specs: Sequence[ClipSpec], options: PipelineOptions, ego_filter: EgoFilter,
                work_dir: Path, progress: bool = True) -> dict[str, float]:
    """{clip_id: score} of every readable clip of `specs`, scoring only those the work
    directory's scores file lacks (saved after every batch)."""
    path = work_dir / SCORES_NAME
    scores = _read_scores(path)
    pending = [spec for spec in specs if spec.clip_id not in scores]
    batch: list[tuple[ClipSpec, np.ndarray]] = []

    def flush():
        values = np.asarray(ego_filter.scorer([frames for _, frames in batch]))
        scores.update({spec.clip_id: round(float(value), 6)
                       for (spec, _), value in zip(batch, values)})
        write_json_atomically(path, scores)
        batch.clear()

    for spec in tqdm.tqdm(pending, desc=STAGE, unit='clip', disable=not progress):
        try:
            frames, _, _ = load_frames(spec, options)
        except ClipSkipped:
            continue  # the frames stage reports it
        batch.append((spec, np.stack(frames)))
        if len(batch) >= ego_filter.batch_size:
            flush()
    if batch:
        flush()
    return scores


def apply_filter(specs: Sequence[ClipSpec], options: PipelineOptions,
                 ego_filter: EgoFilter | None, work_dir: Path, output_dir: Path,
                 progress: bool = True) -> tuple[list[ClipSpec], list[Skip], dict | None]:
    """(kept clips, a Skip per dropped clip, the report's `ego_filter` section); without a
    filter every clip is kept. Writes `output_dir/ego_filter.csv`."""
    if ego_filter is None:
        return list(specs), [], None
    scores = score_clips(specs, options, ego_filter, work_dir, progress)
    kept, dropped = [], []
    table = io.StringIO()
    writer = csv.writer(table, lineterminator='\n')
    writer.writerow(CSV_FIELDS)
    for spec in specs:
        score = scores.get(spec.clip_id)
        keep = score is None or score >= ego_filter.threshold
        (kept.append(spec) if keep else dropped.append(Skip(
            spec.line, spec.clip_id, STAGE, NOT_EGOCENTRIC,
            f'P({ego_filter.positive}) = {score:.3f} < threshold {ego_filter.threshold}')))
        writer.writerow([spec.clip_id, spec.video_id, spec.start, spec.end,
                         '' if score is None else score, int(keep)])
    write_bytes_atomically(str(output_dir / CSV_NAME), table.getvalue().encode('utf-8'))
    section = {'probe': ego_filter.probe, 'positive': ego_filter.positive,
               'threshold': ego_filter.threshold,
               'scored': sum(spec.clip_id in scores for spec in specs),
               'kept': len(kept), 'dropped': len(dropped),
               'scores_csv': str(output_dir / CSV_NAME)}
    return kept, dropped, section
