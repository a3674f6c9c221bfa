"""EPIC-KITCHENS-100 multi-instance retrieval (MIR), zero-shot.

Inputs (unchanged official files): `EPIC_100_retrieval_test.csv` (clips),
`EPIC_100_retrieval_test_sentence.csv` (sentence ids) and
`caption_relevancy_EPIC_100_retrieval_test.pkl` (relevancy, clips x sentences). Each clip is
embedded with its own narration; `S = (V @ T.T + 1) / 2` keeps, per sentence id, the column of
the first clip with that narration id; mAP and nDCG in both directions (metrics.mir_metrics).
Writes `retrievals.png`: text queries with their top-5 clips as frame strips.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate import epic
from egovideo_jax.evaluate.metrics import mir_metrics
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.evaluate.retrieval_plot import STRIP_FRAMES, frame_strip, plot_retrievals
from egovideo_jax.io.csv_rows import read_csv_rows
from egovideo_jax.io.safe_pickle import load_array
from egovideo_jax.media.frames import read_frames_seeking


@dataclasses.dataclass
class Annotations:
    clips: list[epic.EpicClip]
    videos: list[Path]
    sentence_columns: np.ndarray  # per sentence id, the index of its first clip
    relevancy: np.ndarray         # [clips, sentences]


def read_sentence_columns(path: Path, clips: list[epic.EpicClip], clips_csv: Path) -> np.ndarray:
    first_clip: dict[str, int] = {}
    for index, clip in enumerate(clips):
        first_clip.setdefault(clip.narration_id, index)
    columns = []
    for source, row in read_csv_rows(path, ['narration_id']):
        if row['narration_id'] not in first_clip:
            raise ValueError(f'{source}: narration_id {row["narration_id"]!r} is not a clip '
                             f'of {clips_csv}')
        columns.append(first_clip[row['narration_id']])
    return np.asarray(columns, np.int64)


@register('ek100_mir')
class EK100MIR(Evaluator):
    DEFAULTS = dict(root='', clips_csv='', sentences_csv='', relevancy_pkl='',
                    num_examples=4)  # text queries shown in retrievals.png

    def read_annotations(self) -> Annotations:
        clips_csv, sentences_csv = self.path('clips_csv'), self.path('sentences_csv')
        relevancy_pkl, root = self.path('relevancy_pkl'), self.path('root')
        clips = epic.read_epic_csv(clips_csv)
        columns = read_sentence_columns(sentences_csv, clips, clips_csv)
        relevancy = load_array(relevancy_pkl)
        expected = (len(clips), len(columns))
        if relevancy.shape != expected:
            raise ValueError(f'{relevancy_pkl}: relevancy has shape {relevancy.shape}, '
                             f'expected {expected} = (clips in {clips_csv}, sentences in '
                             f'{sentences_csv})')
        # the official test split has 9668 clips and 3842 captions: a user compares here
        print(f'{self.name}: {len(clips)} clips from {clips_csv}, {len(columns)} captions '
              f'from {sentences_csv}', flush=True)
        return Annotations(clips, epic.find_videos(root, clips), columns, relevancy)

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        # JAX loads when a model is evaluated: configs read DEFAULTS without it.
        from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
        config = self.config
        loader = epic.ClipLoader(frame_counts(model.config, config.num_frames),
                                 model.config.vision.image_size)
        video = embed_videos(model, list(zip(annotations.clips, annotations.videos)), loader,
                             config.batch_size, config.num_workers, self.mesh,
                             desc=f'{self.name} clips')
        text = embed_texts(model, [clip.narration for clip in annotations.clips],
                           config.batch_size, desc=f'{self.name} narrations')
        similarity = ((video @ text.T + 1) / 2)[:, annotations.sentence_columns]
        metrics = percent(mir_metrics(similarity, annotations.relevancy))
        if self.outdir is not None and config.num_examples > 0:
            self.outdir.mkdir(parents=True, exist_ok=True)
            self.plot_examples(similarity, annotations, loader)
        return metrics

    def plot_examples(self, similarity: np.ndarray, annotations: Annotations,
                      loader: epic.ClipLoader):
        clips, videos = annotations.clips, annotations.videos
        queries = [clips[column].narration for column in annotations.sentence_columns]

        def strip(index: int) -> np.ndarray:
            indices = loader.indices(clips[index], videos[index], STRIP_FRAMES)
            return frame_strip(read_frames_seeking(videos[index], indices))

        plot_retrievals(self.outdir / 'retrievals.png', similarity, annotations.relevancy,
                        queries, self.config.num_examples, strip,
                        label=lambda index: clips[index].narration_id)

