"""Text<->video retrieval on the held-out split of the embedded demo dataset.

Inputs: a records directory (the HOD pipeline's `heldout` output) and the demo source's
`actions.csv` (`video_id, action, hand, object, fast_motion_only, ...`). Each clip's query
text is its `text_field`: the original narration (`narration`, without Ego4D's `#C ` tag) or
its first HOD narration (`hod`). Clips with the same text are relevant to each other.
Metrics (percent): V->T and T->V R@1, R@5 and mAP over all clips, and the same restricted to
the actions that only fast motion separates (shake vs hold, quick back-and-forth vs a slow
move and back): there 4 frames look alike and 16 do not. With narration queries also
`fast_motion/pair_accuracy`: how often a fast-motion clip is closer to its own narration than
to its partner action's narration for the same object and direction ("shakes the cup" vs
"holds the cup"): 50 is chance, and what a model blind to fast motion gets. Writes
`retrievals.png`: text queries with their top-5 held-out clips as frame strips.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.demo.actions import ACTIONS, ActionSpec
from egovideo_jax.evaluate.embedding import (
    embed_texts,
    embed_videos,
    frame_counts,
    sampled_frames,
)
from egovideo_jax.evaluate.metrics import mir_map
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.evaluate.retrieval_plot import STRIP_FRAMES, frame_strip, plot_retrievals
from egovideo_jax.input.text import clean_narration
from egovideo_jax.io.choices import check_choice
from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.records.dataset import open_dataset

TEXT_FIELDS = ('narration', 'hod')
CHANCE_DRAWS = 50  # random similarity matrices averaged for the chance levels


@dataclasses.dataclass
class Annotations:
    records: Path
    texts: list[str]             # query text per clip, in record order
    fast_motion_only: np.ndarray  # bool per clip
    # Per clip: the narration of its fast-motion partner action (same hand, object and
    # direction), or None (not a fast-motion clip, or HOD queries).
    partner_texts: list[str | None]


def partner_narration(row: dict[str, str]) -> str:
    """The narration of the action only fast motion tells apart from `row`'s (actions.csv)."""
    color, kind = row['object'].split(' ', 1)
    partner = ACTIONS[row['action']].fast_motion_partner
    spec = ActionSpec(partner, row['hand'], color, kind, row['direction'] or None)
    return clean_narration(spec.narration)


def clip_text(clip: dict, text_field: str) -> str:
    if text_field == 'hod' and clip['hod']:
        return clip['hod'][0]
    return clean_narration(clip['narration'])


def recall_at(similarity: np.ndarray, relevancy: np.ndarray, k: int) -> float:
    """Fraction of query rows with a relevant item among their top k."""
    top = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
    return float(np.mean(np.take_along_axis(relevancy, top, axis=1).max(axis=1) > 0))


def text_relevancy(clip_texts: list[str], texts: list[str]) -> np.ndarray:
    """`[clips, texts]`: 1 where the text is the clip's own, else 0."""
    return (np.asarray(clip_texts)[:, None] == np.asarray(texts)[None, :]).astype(np.float64)


def retrieval_metrics(video: np.ndarray, text: np.ndarray, clip_texts: list[str],
                      texts: list[str]) -> dict[str, float]:
    """`video [clips, E]` and `text [len(texts), E]` (L2-normalised; `texts` distinct);
    a clip is relevant to a text when it is the clip's own. V->T ranks the texts for each
    clip, T->V the clips for each text. Fractions, not percent."""
    return similarity_metrics(video @ text.T, text_relevancy(clip_texts, texts))


def similarity_metrics(similarity: np.ndarray, relevancy: np.ndarray) -> dict[str, float]:
    """V->T and T->V R@1, R@5 and mAP of a `[clips, texts]` similarity matrix."""
    metrics = {}
    for direction, s, r in (('v2t', similarity, relevancy), ('t2v', similarity.T, relevancy.T)):
        metrics[f'{direction}_r1'] = recall_at(s, r, 1)
        metrics[f'{direction}_r5'] = recall_at(s, r, 5)
        metrics[f'{direction}_map'] = mir_map(s, r)
    return metrics


@register('demo_retrieval')
class DemoRetrieval(Evaluator):
    DEFAULTS = dict(records='', actions_csv='', text_field='narration',
                    num_examples=4)  # text queries shown in retrievals.png

    def read_annotations(self) -> Annotations:
        records = self.path('records')
        actions_csv = self.path('actions_csv')
        check_choice(self.config.text_field, TEXT_FIELDS, f'{self.key}.text_field')
        with open(actions_csv, newline='') as file:
            rows = list(csv.DictReader(file))
        missing = {'video_id', 'fast_motion_only'} - set(rows[0] if rows else {})
        if missing:
            raise ValueError(f'{actions_csv}: missing columns {sorted(missing)}')
        by_video = {row['video_id']: row for row in rows}
        pairs = self.config.text_field == 'narration'
        dataset = open_dataset(records)
        texts, fast, partners = [], [], []
        for index in range(len(dataset)):
            clip = dataset.decode(index)
            row = by_video.get(clip['video_id'])
            if row is None:
                raise ValueError(f'{records}, record {index}: video {clip["video_id"]!r} is not '
                                 f'in {actions_csv}')
            texts.append(clip_text(clip, self.config.text_field))
            fast.append(row['fast_motion_only'] == '1')
            try:
                partners.append(partner_narration(row) if pairs and fast[-1] else None)
            except (KeyError, ValueError) as error:
                raise ValueError(f'{actions_csv}, video {row["video_id"]}: cannot name the '
                                 f'fast-motion partner action ({error})') from error
        return Annotations(records, texts, np.array(fast, bool), partners)

    def chance_levels(self, annotations: Annotations) -> dict[str, float]:
        """What a model without information scores: every metric averaged over
        `CHANCE_DRAWS` random similarity matrices with these clips' relevancy; 50 for the
        pair accuracy (a two-way choice)."""
        rng = np.random.default_rng(0)
        chance = {}
        for subset, mask in self.subsets(annotations).items():
            clip_texts = [t for t, keep in zip(annotations.texts, mask) if keep]
            relevancy = text_relevancy(clip_texts, sorted(set(clip_texts)))
            draws = [similarity_metrics(rng.standard_normal(relevancy.shape), relevancy)
                     for _ in range(CHANCE_DRAWS)]
            chance.update({f'{subset}/{name}': float(np.mean([d[name] for d in draws]))
                           for name in draws[0]})
        if any(annotations.partner_texts):
            chance['fast_motion/pair_accuracy'] = 0.5
        return percent(chance)

    @staticmethod
    def subsets(annotations: Annotations) -> dict[str, np.ndarray]:
        """The clip subsets metrics are computed on (empty ones left out)."""
        subsets = {'all': np.ones(len(annotations.texts), bool),
                   'fast_motion': annotations.fast_motion_only}
        return {name: mask for name, mask in subsets.items() if mask.any()}

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        counts = frame_counts(model.config, self.config.num_frames)
        size = model.config.vision.image_size
        dataset = open_dataset(annotations.records)

        def load(index: int) -> list[np.ndarray]:
            clip = dataset.decode(index)
            return [eval_transform(sampled_frames(clip, count, annotations.records, index), size)
                    for count in counts]

        video = embed_videos(model, list(range(len(dataset))), load, self.config.batch_size,
                             self.config.num_workers, self.mesh, desc=f'{self.name} videos')
        texts = sorted(set(annotations.texts))  # the queries
        # Partner narrations are mostly other clips' texts: one embedding pass for both.
        partners_only = sorted({t for t in annotations.partner_texts if t} - set(texts))
        embedded = embed_texts(model, texts + partners_only, self.config.batch_size,
                               desc=f'{self.name} texts')
        text = embedded[:len(texts)]
        column = {t: i for i, t in enumerate(texts + partners_only)}
        metrics = {}
        for subset, mask in self.subsets(annotations).items():
            clip_texts = [t for t, keep in zip(annotations.texts, mask) if keep]
            distinct = sorted(set(clip_texts))
            subset_metrics = retrieval_metrics(video[mask], text[[column[t] for t in distinct]],
                                               clip_texts, distinct)
            metrics.update({f'{subset}/{name}': value for name, value in subset_metrics.items()})
        paired = [i for i, partner in enumerate(annotations.partner_texts) if partner]
        if paired:
            own = embedded[[column[annotations.texts[i]] for i in paired]]
            partner = embedded[[column[annotations.partner_texts[i]] for i in paired]]
            metrics['fast_motion/pair_accuracy'] = pair_accuracy(video[paired], own, partner)
        if self.outdir is not None and self.config.num_examples > 0:
            self.outdir.mkdir(parents=True, exist_ok=True)
            self.plot_examples(video, text, texts, annotations, dataset)
        return percent(metrics)

    def plot_examples(self, video: np.ndarray, text: np.ndarray, texts: list[str],
                      annotations: Annotations, dataset):
        """`retrievals.png` over all held-out clips; `texts` are `text`'s rows."""
        def strip(index: int) -> np.ndarray:
            clip = dataset.decode(index)
            return frame_strip(sampled_frames(clip, STRIP_FRAMES, annotations.records, index))

        plot_retrievals(self.outdir / 'retrievals.png', video @ text.T,
                        text_relevancy(annotations.texts, texts), texts,
                        self.config.num_examples, strip,
                        label=lambda index: dataset.decode(index)['clip_id'])


def pair_accuracy(video: np.ndarray, own: np.ndarray, partner: np.ndarray) -> float:
    """Fraction of rows whose video embedding is closer to `own` than to `partner` (ties
    count half)."""
    own_similarity = np.sum(video * own, axis=1)
    partner_similarity = np.sum(video * partner, axis=1)
    return float(np.mean((own_similarity > partner_similarity)
                         + 0.5 * (own_similarity == partner_similarity)))
