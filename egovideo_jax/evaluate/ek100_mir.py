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
import textwrap
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate import epic
from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
from egovideo_jax.evaluate.frames import read_frames_seeking
from egovideo_jax.evaluate.metrics import mir_metrics
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.evaluate.safe_pickle import load_array
from egovideo_jax.input.transforms import resize_short_side_center_crop

STRIP_FRAMES, STRIP_SIZE, TOP_K = 4, 96, 5


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
    for source, row in epic.read_csv_rows(path, ['narration_id']):
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
        return Annotations(clips, epic.find_videos(root, clips), columns, relevancy)

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
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
            plot_retrievals(self.outdir / 'retrievals.png', similarity, annotations,
                            config.num_examples, loader)
        return metrics


def _strip(clip: epic.EpicClip, path: Path, loader: epic.ClipLoader) -> np.ndarray:
    frames = read_frames_seeking(path, loader.indices(clip, path, STRIP_FRAMES))
    gap = np.full((STRIP_SIZE, 2, 3), 255, np.uint8)  # white line between frames
    tiles = [part for frame in frames
             for part in (resize_short_side_center_crop(frame, STRIP_SIZE), gap)]
    return np.concatenate(tiles[:-1], axis=1)


def plot_retrievals(path: Path, similarity: np.ndarray, annotations: Annotations,
                    num_examples: int, loader: epic.ClipLoader):
    """Text -> video examples: per sentence (evenly spread over the sentence list), its text
    and the top-5 clips as frame strips, titled with their relevancy to the sentence."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    num_sentences = similarity.shape[1]
    sentences = np.unique(np.linspace(0, num_sentences - 1, min(num_examples, num_sentences))
                          .round().astype(int))
    figure = Figure(figsize=(3.2 * TOP_K, 1.6 * len(sentences)), layout='constrained')
    for row, sentence in zip(figure.subfigures(len(sentences), 1, squeeze=False)[:, 0],
                             sentences):
        query = annotations.clips[annotations.sentence_columns[sentence]].narration
        row.suptitle(textwrap.shorten(f'"{query}"', 120), fontsize=10, ha='left', x=0.01)
        ranked = np.argsort(-similarity[:, sentence], kind='stable')[:TOP_K]
        for rank, (axes, clip_index) in enumerate(zip(row.subplots(1, TOP_K), ranked), 1):
            clip = annotations.clips[clip_index]
            axes.imshow(_strip(clip, annotations.videos[clip_index], loader))
            axes.set_title(f'{rank}. {clip.narration_id} rel '
                           f'{annotations.relevancy[clip_index, sentence]:.2f}', fontsize=8)
            axes.set_axis_off()
    figure.savefig(path, dpi=80)
