"""What the HOD pipeline keeps on disk between runs: the narration cache and the store of
finished clips. Both write one file per entry, atomically (temporary name, fsync, rename), so
a run killed at any point leaves only whole entries behind.

Narration cache (`NarrationCache(root)`): `{root}/{key[:2]}/{key}.json` holding the narration
text and how it was obtained. `narration_key(...)` is the sha256 of a canonical JSON of what
decides a narration: the clip (id, start, end, original narration), the detections the
tracks were built from (serialised after the score thresholds; `None` for frames without
any), the track smoothing, `prompt.PROMPT_VERSION`, the back-end name and its model. A
re-run therefore asks the narrator nothing it has answered before, across output
directories when they share a cache. Only answers of the narrator itself are cached (`source
== 'primary'`): a fallback after timeouts or invalid answers is not, so a later run gives the
back-end another try on exactly those clips.

Finished-clip store (`FinishedClipStore(root)`): `{root}/{sha256(clip_id)[:32]}.clip`, a
two-record TFRecord-framed file (CRC-checked): a JSON header (`FinishedClip` minus the
record) and the clip's serialised record (`records.encode_clip`). A clip is finished once
its file exists; the runner skips finished clips and builds the outputs from this store, so
whatever point a run was killed at, its restart writes every clip exactly once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from egovideo_jax.hod.detections import FrameDetections
from egovideo_jax.hod.jsonl_detections import frame_to_dict
from egovideo_jax.hod.prompt import PROMPT_VERSION
from egovideo_jax.io.atomic import write_bytes_atomically, write_json_atomically
from egovideo_jax.records import tfrecord

CACHE_FORMAT = 1


def narration_key(clip_id: str, start: float, end: float, narration: str,
                  detections: Sequence[FrameDetections | None], smoothing: int,
                  backend: str, model: str, prompt_version: str = PROMPT_VERSION) -> str:
    """sha256 (hex) of everything that decides the narration of one clip."""
    payload = {
        'format': CACHE_FORMAT,
        'clip': [clip_id, repr(float(start)), repr(float(end)), narration],
        # video_id is part of clip_id; frame_to_dict needs one, its value does not matter here
        'detections': [None if frame is None else frame_to_dict('', frame)
                       for frame in detections],
        'smoothing': smoothing,
        'prompt_version': prompt_version,
        'backend': backend,
        'model': model,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedNarration:
    text: str
    backend: str
    model: str
    attempts: int


class NarrationCache:
    """Narrations by `narration_key`; `get` returns None on a miss (or an unreadable entry,
    which is then recomputed and overwritten)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f'{key}.json'

    def get(self, key: str) -> CachedNarration | None:
        try:
            entry = json.loads(self.path(key).read_text(encoding='utf-8'))
            return CachedNarration(entry['text'], entry['backend'], entry['model'],
                                   int(entry['attempts']))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # a damaged entry is a miss, not a crash
            return None

    def put(self, key: str, narration: CachedNarration) -> None:
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        write_json_atomically(path, dataclasses.asdict(narration))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob('*/*.json'))


@dataclasses.dataclass(frozen=True)
class FinishedClip:
    """One clip that went through every stage: its record and what the report needs."""
    clip_id: str
    line: int  # of the input table: the order of the outputs
    video_id: str
    start: float
    end: float
    source: str
    hod: tuple[str, ...]
    narration_source: str  # 'primary' | 'fallback' (ValidatedNarrator)
    from_cache: bool
    attempts: int
    problems: tuple[str, ...]
    fps: float  # source frame rate, 0.0 when unknown
    record: bytes  # records.encode_clip(...)

    def header(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name != 'record'}


class FinishedClipStore:

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, clip_id: str) -> Path:
        return self.root / f'{hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:32]}.clip'

    def __contains__(self, clip_id: str) -> bool:
        return self.path(clip_id).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob('*.clip'))

    def put(self, clip: FinishedClip) -> None:
        header = json.dumps(clip.header()).encode('utf-8')
        write_bytes_atomically(os.fspath(self.path(clip.clip_id)),
                               tfrecord.frame_record(header) + tfrecord.frame_record(clip.record))

    def get(self, clip_id: str) -> FinishedClip:
        """The finished clip; RecordError naming the file when it is damaged."""
        path = os.fspath(self.path(clip_id))
        shard = tfrecord.IndexedTFRecord(path)
        try:
            if len(shard) != 2:
                raise tfrecord.RecordError(path, -1, f'expected 2 records, found {len(shard)}')
            header = json.loads(shard.read(0))
            if header.get('clip_id') != clip_id:
                raise tfrecord.RecordError(path, 0, f'holds clip {header.get("clip_id")!r}, '
                                                    f'expected {clip_id!r}')
            header['hod'] = tuple(header['hod'])
            header['problems'] = tuple(header['problems'])
            return FinishedClip(**header, record=shard.read(1))
        finally:
            shard.close()
