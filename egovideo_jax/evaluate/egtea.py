"""EGTEA Gaze+ zero-shot action recognition (106 classes).

Inputs (unchanged official files, read by `egovideo_jax/io/epic_files.py`):
`action_idx.txt` (lines `Name_With_Underscores idx`, idx 1..N; class text = the name with
`_` -> space, lower-cased) and `test_split1.txt` (lines `clip_id action_idx ...`); the trimmed clip of `clip_id` is
`{root}/{first three '-'-fields of clip_id}/{clip_id}.mp4`. Each clip is read whole: `n`
frames at `floor((k + 0.5) * num_frames / n)`. Metrics: top-1 and mean class accuracy.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate.metrics import mean_class_accuracy, topk_accuracy
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.io.epic_files import clip_video, read_action_names, read_lines
from egovideo_jax.media.frames import read_clips
from egovideo_jax.media.video import video_info


@dataclasses.dataclass
class Annotations:
    class_texts: list[str]
    videos: list[Path]
    sources: list[str]   # 'FILE, line N' of each test clip
    labels: np.ndarray   # 0-based class per clip


def whole_clip_indices(num_frames: int, n: int) -> np.ndarray:
    return np.floor((np.arange(n) + 0.5) * num_frames / n).astype(np.int64)


@register('egtea')
class EGTEA(Evaluator):
    DEFAULTS = dict(root='', action_idx='', test_split='')

    def read_annotations(self) -> Annotations:
        action_idx, test_split, root = (self.path('action_idx'), self.path('test_split'),
                                        self.path('root'))
        class_texts = read_action_names(action_idx)
        videos, sources, labels = [], [], []
        for source, fields in read_lines(test_split):
            if len(fields) < 2 or not fields[1].isdigit() or fields[0].count('-') < 2:
                raise ValueError(f'{source}: expected "clip_id action_idx ..." with a clip_id '
                                 f'of at least three "-"-fields, got {" ".join(fields)!r}')
            label = int(fields[1])
            if not 1 <= label <= len(class_texts):
                raise ValueError(f'{source}: unknown class {label}; {action_idx} defines '
                                 f'1..{len(class_texts)}')
            video = clip_video(root, fields[0])
            if not video.is_file():
                raise ValueError(f'{source}: video not found: {video}')
            videos.append(video)
            sources.append(source)
            labels.append(label - 1)
        if not videos:
            raise ValueError(f'{test_split}: no test clips')
        return Annotations(class_texts, videos, sources, np.asarray(labels, np.int64))

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        # JAX loads when a model is evaluated: configs read DEFAULTS without it.
        from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
        config = self.config
        counts = frame_counts(model.config, config.num_frames)
        size = model.config.vision.image_size

        def load(video_and_source: tuple[Path, str]) -> list[np.ndarray]:
            video, source = video_and_source
            try:
                num_frames = video_info(video)[0]
                return read_clips(video, [whole_clip_indices(num_frames, n) for n in counts],
                                  size)
            except ValueError as error:
                raise ValueError(f'{source}: {error}') from error

        video = embed_videos(model, list(zip(annotations.videos, annotations.sources)), load,
                             config.batch_size, config.num_workers, self.mesh,
                             desc=f'{self.name} clips')
        classes = embed_texts(model, annotations.class_texts, config.batch_size,
                              desc=f'{self.name} class texts')
        scores = video @ classes.T
        return percent({
            'top1': topk_accuracy(scores, annotations.labels, 1),
            'mean_class_acc': mean_class_accuracy(np.argmax(scores, axis=1), annotations.labels),
        })
