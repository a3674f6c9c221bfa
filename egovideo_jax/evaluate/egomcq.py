"""EgoMCQ (EgoVLP): pick the clip, out of five, that the narration describes.

Input (unchanged official file): `egomcq.json`, a dict keyed `"0".."N-1"`; each item
`{"query": {clip fields}, "choices": {"0".."4": {clip fields}}, "answer": int, "types": 1|2}`
with clip fields `video_uid, clip_start, clip_end, clip_text, ...` (seconds). Videos come from
the Ego4D chunked store: `{root}/{video_uid}/{index:04d}.mp4`, each chunk `chunk_seconds`
long at `fps`. The query's `clip_text` is scored against the five choice clips by cosine;
the argmax (first on ties) is the answer. Accuracy per type: 1 inter-video, 2 intra-video.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from egovideo_jax.evaluate.metrics import MCQ_TYPES, mcq_accuracy
from egovideo_jax.evaluate.registry import Evaluator, percent, register
from egovideo_jax.media.frames import read_frames_seeking
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.media.video import video_info


@dataclasses.dataclass(frozen=True)
class Clip:
    video_uid: str
    start: float  # seconds
    end: float


@dataclasses.dataclass
class Annotations:
    queries: list[str]
    clips: list[Clip]          # distinct choice clips
    clip_sources: list[str]    # where each clip first appears, for errors
    choices: np.ndarray        # [items, choices] index into `clips`
    answers: np.ndarray
    types: np.ndarray


def _clip(fields, where: str) -> Clip:
    if not isinstance(fields, dict):
        raise ValueError(f'{where}: expected an object with video_uid, clip_start, clip_end')
    try:
        uid, start, end = fields['video_uid'], fields['clip_start'], fields['clip_end']
        # Starts before the video (negative) are clamped to 0, as the reference does.
        return Clip(str(uid), max(float(start), 0.0), max(float(end), 0.0))
    except KeyError as error:
        raise ValueError(f'{where}: missing field {error}') from None
    except (TypeError, ValueError):
        raise ValueError(f'{where}: clip_start/clip_end must be numbers, got '
                         f'{fields.get("clip_start")!r}, {fields.get("clip_end")!r}') from None


def _integer(value) -> int | None:
    """An int, or a string of digits (accepted too); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def read_items(path: Path) -> Annotations:
    try:
        with open(path, encoding='utf-8') as file:
            items = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}, line {error.lineno}: not valid JSON: {error.msg}') from None
    if not isinstance(items, dict) or not items:
        raise ValueError(f'{path}: expected a non-empty object keyed "0".."N-1"')
    queries, rows, answers, types = [], [], [], []
    clip_index: dict[Clip, int] = {}
    clip_sources = []
    for key, item in items.items():
        where = f'{path}, item "{key}"'
        if not isinstance(item, dict):
            raise ValueError(f'{where}: expected an object with query, choices, answer, types')
        missing = [field for field in ('query', 'choices', 'answer', 'types')
                   if field not in item]
        if missing:
            raise ValueError(f'{where}: missing {missing}')
        query = item['query']
        if not isinstance(query, dict) or not isinstance(query.get('clip_text'), str):
            raise ValueError(f'{where}: query.clip_text must be a string')
        choices = item['choices']
        if not isinstance(choices, dict) or sorted(choices) != [str(i) for i in range(5)]:
            raise ValueError(f'{where}: choices must be an object keyed "0".."4"')
        row = []
        for choice in range(5):
            clip = _clip(choices[str(choice)], f'{where}, choice {choice}')
            if clip not in clip_index:
                clip_index[clip] = len(clip_index)
                clip_sources.append(f'{where}, choice {choice}')
            row.append(clip_index[clip])
        answer, kind = _integer(item['answer']), _integer(item['types'])
        if answer not in range(5):
            raise ValueError(f'{where}: answer must be an integer 0..4, got {item["answer"]!r}')
        if kind not in MCQ_TYPES:
            raise ValueError(f'{where}: types must be one of {sorted(MCQ_TYPES)}, got '
                             f'{item["types"]!r}')
        queries.append(query['clip_text'])
        rows.append(row)
        answers.append(answer)
        types.append(kind)
    return Annotations(queries, list(clip_index), clip_sources, np.asarray(rows, np.int64),
                       np.asarray(answers, np.int64), np.asarray(types, np.int64))


class ChunkedStore:
    """The Ego4D chunked store: `{root}/{video_uid}/{index:04d}.mp4`, chunk `index` holding
    global frames `[index * chunk_frames, (index + 1) * chunk_frames)`."""

    def __init__(self, root: Path, chunk_seconds: float, fps: float):
        self.root, self.fps = root, fps
        self.chunk_frames = round(chunk_seconds * fps)

    def chunk_path(self, video_uid: str, chunk: int) -> Path:
        return self.root / video_uid / f'{chunk:04d}.mp4'

    def first_chunk(self, clip: Clip) -> Path:
        return self.chunk_path(clip.video_uid, round(clip.start * self.fps) // self.chunk_frames)

    def frame_range(self, clip: Clip) -> tuple[int, int]:
        """Global frames `[round(start * fps), round(end * fps))`; as the reference does, a
        clip running past the last chunk present ends with that chunk."""
        start = round(clip.start * self.fps)
        end = max(round(clip.end * self.fps), start + 1)
        first, last = start // self.chunk_frames, (end - 1) // self.chunk_frames
        while last > first and not self.chunk_path(clip.video_uid, last).is_file():
            last -= 1
        last_path = self.chunk_path(clip.video_uid, last)
        if not last_path.is_file():
            raise ValueError(f'video chunk not found: {last_path}')
        available = last * self.chunk_frames + video_info(last_path)[0]
        return start, max(min(end, available), start + 1)

    def read(self, video_uid: str, indices: np.ndarray) -> np.ndarray:
        """uint8 frames at global `indices`, each read from the chunk that holds it."""
        frames = [None] * len(indices)
        chunks = indices // self.chunk_frames
        for chunk in np.unique(chunks):
            positions = np.flatnonzero(chunks == chunk)
            decoded = read_frames_seeking(self.chunk_path(video_uid, int(chunk)),
                                          indices[positions] - chunk * self.chunk_frames)
            for position, frame in zip(positions, decoded):
                frames[position] = frame
        return np.stack(frames)


@register('egomcq')
class EgoMCQ(Evaluator):
    DEFAULTS = dict(root='', json='', chunk_seconds=15.0, fps=30.0)

    def read_annotations(self) -> Annotations:
        annotations = read_items(self.path('json'))
        store = self.store()
        for clip, source in zip(annotations.clips, annotations.clip_sources):
            if not store.first_chunk(clip).is_file():
                raise ValueError(f'{source}: video chunk not found: {store.first_chunk(clip)}')
        return annotations

    def store(self) -> ChunkedStore:
        return ChunkedStore(self.path('root'), self.config.chunk_seconds, self.config.fps)

    def evaluate(self, model, annotations: Annotations) -> dict[str, float]:
        # JAX loads when a model is evaluated: configs read DEFAULTS without it.
        from egovideo_jax.evaluate.embedding import embed_texts, embed_videos, frame_counts
        config = self.config
        store = self.store()
        counts = frame_counts(model.config, config.num_frames)

        def load(clip_and_source: tuple[Clip, str]) -> list[np.ndarray]:
            clip, source = clip_and_source
            try:
                index_sets = [sample_eval(*store.frame_range(clip), n) for n in counts]
                frames = store.read(clip.video_uid, np.concatenate(index_sets))
            except ValueError as error:
                raise ValueError(f'{source}: {error}') from error
            clips = eval_transform(frames, model.config.vision.image_size)
            return np.split(clips, np.cumsum(counts)[:-1])

        video = embed_videos(model, list(zip(annotations.clips, annotations.clip_sources)),
                             load, config.batch_size, config.num_workers, self.mesh,
                             desc=f'{self.name} clips')
        text = embed_texts(model, annotations.queries, config.batch_size,
                           desc=f'{self.name} queries')
        scores = np.einsum('ne,nce->nc', text, video[annotations.choices])
        return percent(mcq_accuracy(scores, annotations.answers, annotations.types))
