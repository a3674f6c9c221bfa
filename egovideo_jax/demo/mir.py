"""`demo_mir`: EK-100-style multi-instance retrieval on the demo's held-out clips.

The queries are the distinct held-out narrations; a clip's relevancy to a narration is EK-100
MIR's graded one (demo/finetune.py `graded_relevancy`: 0.5 for the same action, 0.5 for the
same object), and the metrics are the EK-100 evaluator's (`mir_metrics`: mAP and nDCG,
video -> text, text -> video and their mean), so `demo_mir` fine-tuning is scored as
`ek100_mir` is. Chance levels: the metrics averaged over random similarity matrices.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.demo.finetune import graded_relevancy, read_actions
from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts, sampled_frames
from egovideo_jax.evaluate.metrics import mir_metrics
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.input.text import clean_narration
from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.records.dataset import open_dataset

CHANCE_DRAWS = 20


@dataclasses.dataclass
class Annotations:
    records: Path
    texts: list[str]        # the distinct held-out narrations: the queries
    relevancy: np.ndarray   # float64 [clips, texts]


@register('demo_mir')
class DemoMIR(Evaluator):
    DEFAULTS = dict(records='', actions_csv='')

    def read_annotations(self) -> Annotations:
        records, actions_csv = self.path('records'), self.path('actions_csv')
        actions = read_actions(actions_csv)
        dataset = open_dataset(records)
        clip_pairs, texts = [], {}
        for index in range(len(dataset)):
            clip = dataset.decode(index)
            pair = actions.get(clip['video_id'])
            if pair is None:
                raise ValueError(f'{records}, record {index}: video {clip["video_id"]!r} is not '
                                 f'in {actions_csv}')
            clip_pairs.append(pair)
            texts.setdefault(clean_narration(clip['narration']), pair)
        queries = sorted(texts)
        relevancy = np.array([[graded_relevancy(pair, texts[text]) for text in queries]
                              for pair in clip_pairs], np.float64)
        print(f'{self.name}: {len(clip_pairs)} clips from {records}, {len(queries)} captions',
              flush=True)
        return Annotations(records, queries, relevancy)

    def chance_levels(self, annotations: Annotations) -> dict[str, float]:
        rng = np.random.default_rng(0)
        draws = [mir_metrics(rng.standard_normal(annotations.relevancy.shape),
                             annotations.relevancy) for _ in range(CHANCE_DRAWS)]
        return percent({name: float(np.mean([d[name] for d in draws])) for name in draws[0]})

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
        text = embed_texts(model, annotations.texts, self.config.batch_size,
                           desc=f'{self.name} texts')
        return percent(mir_metrics(video @ text.T, annotations.relevancy))
