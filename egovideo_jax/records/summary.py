"""Human-readable summaries of a dataset directory and of one clip (the `inspect` command)."""
from __future__ import annotations

import collections
import os

import numpy as np

from egovideo_jax.records import schema
from egovideo_jax.records.dataset import ClipDataset

_VALID_NAMES = {0: 'absent', 1: 'detected', 2: 'interpolated'}


def describe_dataset(dataset: ClipDataset) -> list[str]:
    manifest = dataset.manifest
    lines = [f'dataset {dataset.directory}: {len(dataset)} records in {len(dataset.shards)} shards']
    if manifest is None:
        lines.append('  no manifest.json: shards found by file name; TFRecords without an '
                     'index were indexed by scan')
    else:
        sizes = ', '.join(f'{height}x{width}' for height, width in manifest.get('frame_sizes', []))
        producer = manifest.get('producer') or {}
        lines += [
            f'  schema v{manifest["schema_version"]}, format {manifest["format"]}, '
            f'name {manifest.get("name")}, created {manifest.get("created_utc")}',
            f'  frames per clip: {manifest.get("frames_per_clip")}; frame sizes (HxW): '
            f'{sizes or "-"}; fps: {manifest.get("fps")}',
            f'  narration fields: {", ".join(manifest.get("narration_fields", [])) or "none"}',
            f'  label fields: {", ".join(manifest.get("label_fields", [])) or "none"}',
            f'  producer: {producer.get("command", producer) or "-"}',
        ]
    lines.append('  shards:')
    for shard in dataset.shards:
        lines.append(f'    {os.path.basename(shard.path)}  {len(shard)} records  '
                     f'{os.path.getsize(shard.path) / 1024:.1f} KiB')
    return lines


def training_records_line(dataset: ClipDataset) -> str:
    """What a training run reads, in one line to compare with a benchmark's published counts:
    `train records: N clips in DIR; classes: V verbs, N nouns, A actions; captions: D
    distinct, S stored` (classes from classes.json, captions from the manifest's counts;
    each part only where the dataset has it)."""
    from egovideo_jax.records.classes import CLASSES_NAME, read_classes

    parts = [f'train records: {len(dataset)} clips in {dataset.directory}']
    if os.path.isfile(os.path.join(dataset.directory, CLASSES_NAME)):
        classes = read_classes(dataset.directory)
        parts.append('classes: ' + ', '.join(f'{len(names)} {head}s'
                                             for head, names in classes.names.items()))
    manifest = dataset.manifest or {}
    counts = manifest.get('caption_counts')
    if counts and counts['stored']:
        parts.append(f'captions: {counts["distinct"]} distinct, {counts["stored"]} stored')
    elif 'captions/text' in manifest.get('label_fields', []):
        parts.append('captions: not counted (manifest.json predates caption_counts)')
    return '; '.join(parts)


def _counts(values: np.ndarray, names: dict | None = None) -> str:
    counts = collections.Counter(values.tolist())
    return ', '.join(f'{names.get(value, value) if names else value}: {count}'
                     for value, count in sorted(counts.items())) or '-'


def describe_clip(clip: dict) -> list[str]:
    height, width = schema.decode_jpeg(clip['frames_jpeg'][0]).shape[:2]
    times = clip['frame_times']
    lines = [
        f'clip {clip["clip_id"]}  (video {clip["video_id"]}, source {clip["source"]})',
        f'  clip time [{clip["start"]:.3f}, {clip["end"]:.3f}) s; frames: '
        f'{len(clip["frames_jpeg"])} x {height}x{width} (HxW), stored at '
        f'{times.min():.3f}..{times.max():.3f} s',
        f'  narration: {clip["narration"]!r}',
        f'  hod: {clip["hod"]!r}' if clip['hod'] else '  hod: none',
    ]
    for name in schema.BOX_NAMES:
        lines.append(f'  boxes/{name}: {_counts(clip["box_valid"][name], _VALID_NAMES)}')
    for hand in schema.HAND_NAMES:
        lines.append(f'  hands/{hand}_contact: {_counts(clip["contact"][hand])}')
    labels = clip.get('labels') or {}
    if labels:
        lines.append('  labels: ' + ', '.join(f'{name} {labels[name]}'
                                              for name in schema.LABEL_NAMES if name in labels))
    captions = clip.get('captions') or []
    if captions:
        lines.append(f'  captions: {len(captions)} (relevancy '
                     f'{float(clip["caption_relevancy"].max()):.2f}..'
                     f'{float(clip["caption_relevancy"].min()):.2f})')
        for text, relevancy in list(zip(captions, clip['caption_relevancy']))[:5]:
            lines.append(f'    {relevancy:.2f} {text!r}')
        if len(captions) > 5:
            lines.append(f'    ... {len(captions) - 5} more')
    return lines
