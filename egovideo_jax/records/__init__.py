"""Clip records: TFRecord framing + CRC + offset index, ArrayRecord shards, the clip
schema, dataset directories with a manifest, and the CSV + mp4 converter.

Main entry points for readers: `open_dataset(dir)` -> `ClipDataset` (`len`, `read(i)`,
`decode(i)`, `locate(i)`), `decode_clip(bytes)`, `decode_frames(clip, indices)`.
Writers: `DatasetWriter`, `encode_clip`, `encode_jpeg`. Errors: `RecordError`.
"""
from egovideo_jax.records.arrayrecord import IndexedArrayRecord, write_array_record_shard
from egovideo_jax.records.dataset import ClipDataset, DatasetWriter, open_dataset, verify_dataset
from egovideo_jax.records.schema import (
                                         SCHEMA_VERSION,
                                         decode_clip,
                                         decode_frames,
                                         decode_jpeg,
                                         empty_tracks,
                                         encode_clip,
                                         encode_jpeg,
)
from egovideo_jax.records.tfrecord import (
                                         IndexedTFRecord,
                                         RecordError,
                                         masked_crc32c,
                                         scan_offsets,
                                         write_shard,
)

__all__ = [
    'ClipDataset', 'DatasetWriter', 'IndexedArrayRecord', 'IndexedTFRecord', 'RecordError',
    'SCHEMA_VERSION', 'decode_clip', 'decode_frames', 'decode_jpeg', 'empty_tracks',
    'encode_clip', 'encode_jpeg', 'masked_crc32c', 'open_dataset', 'scan_offsets',
    'verify_dataset', 'write_array_record_shard', 'write_shard',
]
