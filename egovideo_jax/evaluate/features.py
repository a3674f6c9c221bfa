"""Frozen-model features of clip records, extracted once: cached on disk, resumable, split
over hosts (what linear probes train on).

A clip's feature is the model's L2-normalised video embedding of its centre view: per video
input (slow, and fast for slow/fast models) `count` frames at the centres of equal segments of
its stored frames, short-side resized to the model's input size, centre-cropped and
CLIP-normalised (`media.transforms.eval_transform`).

Cache layout, under `cache_root/{dataset}-{key}` where `key` hashes everything the features
depend on (the records' manifest, the model's configuration and parameter values, the frame
counts), so a changed model or dataset never reads stale features:

    spec.json                 what the features are (written first)
    part-00000.npz ...        clips [k * part_clips, ...): `features [n, D]`, `indices [n]`,
                              `clip_ids [n]`, `labels` (their label dicts as JSON), so
                              reading the cache reads no record

Each part is written atomically when its clips are embedded; a killed extraction restarted
with the same arguments computes only the missing parts. With several processes (a
multi-host run), part k is computed by process `k % process_count` and every process reads
all parts after a barrier (the cache must be on a shared file system).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from egovideo_jax.evaluate.embedding import embed_videos, frame_counts
from egovideo_jax.io.atomic import write_bytes_atomically, write_json_atomically
from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.media.transforms import eval_transform
from egovideo_jax.model.encoder import Encoder
from egovideo_jax.records.dataset import open_dataset, read_manifest
from egovideo_jax.records.schema import decode_frames

FEATURES_VERSION = 2  # 2: parts hold the clip ids and labels
PART_CLIPS = 256


@dataclasses.dataclass(frozen=True)
class RecordFeatures:
    features: np.ndarray  # float32 [clips, embed]
    labels: dict[str, np.ndarray]  # per head: int64 [clips], -1 where a clip has none
    clip_ids: list[str]
    spec: dict  # what the features are (`feature_spec`)


def params_digest(params) -> str:
    """sha256 over every parameter's path, shape, dtype and bytes."""
    import jax
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        value = np.asarray(jax.device_get(leaf))
        digest.update(f'{jax.tree_util.keystr(path)}{value.shape}{value.dtype}'.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def feature_spec(model: Encoder, num_frames: int, checkpoint: str = '') -> dict:
    """What a feature of `model` is: a probe trained on them is only valid on the same."""
    config = model.config
    return {'features_version': FEATURES_VERSION, 'feature': 'video_embedding',
            'variant': config.variant, 'mode': config.mode,
            'frames': list(frame_counts(config, num_frames)),
            'image_size': config.vision.image_size, 'embed_dim': config.embed_dim,
            'checkpoint': checkpoint, 'params_sha256': params_digest(model.params)}


def clip_inputs(read_frames: Callable[[list[int]], np.ndarray], stored: int,
                counts: Sequence[int], size: int) -> list[np.ndarray]:
    """The model's video inputs (float32 `[T, size, size, 3]` per branch) of a clip of
    `stored` frames: `T` eval-sampled frames per branch (`read_frames(indices)` gives them,
    uint8 `[T, H, W, 3]`), the centre view."""
    return [eval_transform(read_frames(sample_eval(0, stored, count).tolist()), size)
            for count in counts]


def parts_of_process(num_parts: int, rank: int, processes: int) -> list[int]:
    """The parts process `rank` of `processes` computes: every `processes`-th from `rank`."""
    return list(range(rank, num_parts, processes))


def _part_path(directory: Path, part: int) -> Path:
    return directory / f'part-{part:05d}.npz'


def _cache_dir(records: Path, cache_root: Path, spec: dict) -> Path:
    manifest = read_manifest(records)
    key = hashlib.sha256(json.dumps({'manifest': manifest, 'spec': spec},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_root / f'{records.resolve().name}-{key}'


def extract_features(model: Encoder, records: str | os.PathLike,
                     cache_root: str | os.PathLike, spec: dict, *, batch_size: int = 8,
                     num_workers: int = 4, part_clips: int = PART_CLIPS,
                     desc: str = 'features') -> RecordFeatures:
    """The features and labels of every clip of the records directory `records`, computing
    only the parts missing from the cache. `spec` is `feature_spec(model, ...)`, computed
    once by the caller for all its directories (it hashes every parameter)."""
    import jax
    records = Path(records)
    directory = _cache_dir(records, Path(cache_root), spec)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(directory / 'spec.json', {**spec, 'records': str(records.resolve())})
    dataset = open_dataset(records)
    counts, size = spec['frames'], model.config.vision.image_size
    parts = range(0, (len(dataset) + part_clips - 1) // part_clips)
    rank, processes = jax.process_index(), jax.process_count()

    def part_indices(part: int) -> np.ndarray:
        return np.arange(part * part_clips, min(len(dataset), (part + 1) * part_clips))

    missing = [part for part in parts_of_process(len(parts), rank, processes)
               if not _part_path(directory, part).exists()]
    todo = sum(len(part_indices(part)) for part in missing)
    print(f'{desc}: {len(dataset)} clips of {records}; {len(parts) - len(missing)} of '
          f'{len(parts)} parts cached in {directory}; embedding {todo} clips', flush=True)
    with tqdm(total=todo, desc=desc, unit='clip', smoothing=0.1, disable=not missing
              ) as progress:
        for part in missing:
            indices = part_indices(part)

            found = {}  # index -> (clip id, labels), kept beside the features

            def load(index):
                clip = dataset.decode(int(index))
                found[int(index)] = (clip['clip_id'], clip['labels'])
                return clip_inputs(functools.partial(decode_frames, clip, shard=str(records),
                                                     index=int(index)),
                                   len(clip['frames_jpeg']), counts, size)

            features = embed_videos(model, list(indices), load, batch_size, num_workers,
                                    progress=progress)
            clip_ids = [found[int(index)][0] for index in indices]
            label_json = json.dumps([found[int(index)][1] for index in indices])
            buffer = io.BytesIO()
            np.savez(buffer, features=features, indices=indices, clip_ids=np.array(clip_ids),
                     labels=np.array(label_json))
            write_bytes_atomically(str(_part_path(directory, part)), buffer.getvalue())
    if processes > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f'features {directory.name}')
    return _read_cache(directory, len(dataset), parts, spec)


def _read_cache(directory: Path, num_clips: int, parts: range, spec: dict) -> RecordFeatures:
    """The parts' features, clip ids and labels, in clip order (no record is read)."""
    features, labels, clip_ids = [], {}, []
    for part in parts:
        with np.load(_part_path(directory, part), allow_pickle=False) as arrays:
            features.append(arrays['features'])
            indices = arrays['indices']
            clip_ids += [str(clip_id) for clip_id in arrays['clip_ids']]
            part_labels = json.loads(str(arrays['labels']))
        for index, clip_labels in zip(indices, part_labels):
            for head, value in clip_labels.items():
                labels.setdefault(head, np.full(num_clips, -1, np.int64))[index] = value
    stacked = np.concatenate(features) if features else np.zeros((0, spec['embed_dim']),
                                                                  np.float32)
    return RecordFeatures(stacked, labels, clip_ids, spec)
