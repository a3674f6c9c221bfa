"""TFRecord framing, CRCs, the offset index, positioned reads, corruption errors, atomic
shard writing, and the clip schema (egovideo_jax.records.tfrecord / schema)."""
import os
import pickle
import struct

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from egovideo_jax.records import schema, tfrecord
from egovideo_jax.records.tfrecord import (
    IndexedTFRecord,
    RecordError,
    frame_record,
    masked_crc32c,
    scan_offsets,
    write_shard,
)
from tests.helpers.clips import assert_clips_equal, make_clip


def reference_crc32c(data: bytes) -> int:
    """Bitwise CRC32C (reflected Castagnoli polynomial), independent of google-crc32c."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def reference_mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records_of(count, size=50):
    return [bytes([index]) * (size + index) for index in range(count)]


# ----------------------------------------------------------------------------- CRC and framing

def test_crc32c_check_value_and_mask():
    assert reference_crc32c(b'123456789') == 0xE3069283  # the standard CRC-32C check value
    # By hand: 0xE3069283 >> 15 = 0x0001C60D; (<< 17) mod 2^32 = 0x25060000;
    # OR = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5 (mod 2^32).
    assert masked_crc32c(b'123456789') == 0xC78AB0E5
    for data in (b'', b'a', bytes(range(256)), b'\x00' * 32):
        assert masked_crc32c(data) == reference_mask(reference_crc32c(data))


def test_framing_bytes_of_a_known_record():
    length = struct.pack('<Q', 5)
    expected = (length + struct.pack('<I', reference_mask(reference_crc32c(length)))
                + b'hello' + struct.pack('<I', reference_mask(reference_crc32c(b'hello'))))
    assert frame_record(b'hello') == expected
    assert frame_record(b'hello').hex() == '0500000000000000eab2043e68656c6c6fbb1f1c19'


# ----------------------------------------------------------------------------- shard + index

@pytest.fixture
def shard(tmp_path):
    path = tmp_path / 'data-00000-of-00001.tfrecord'
    assert write_shard(path, records_of(5)) == 5
    return str(path)


def test_write_shard_bytes_and_index_round_trip(shard):
    records = records_of(5)
    with open(shard, 'rb') as file:
        assert file.read() == b''.join(frame_record(record) for record in records)
    offsets = np.cumsum([0] + [len(record) + 16 for record in records[:-1]])
    np.testing.assert_array_equal(tfrecord.read_index(shard), offsets)
    with open(tfrecord.index_path(shard), 'rb') as file:
        index = file.read()
    assert index[:8] == b'EVJTFIDX' and len(index) == 32 + 8 * 5
    assert struct.unpack_from('<IIQQ', index, 8) == (1, 0, 5, os.path.getsize(shard))
    np.testing.assert_array_equal(scan_offsets(shard), offsets)


def test_positioned_reads_in_any_order(shard):
    records = records_of(5)
    reader = IndexedTFRecord(shard)
    assert len(reader) == 5 and reader.has_index_file
    for index in (3, 0, 4, 3, 1, 2):
        assert reader.read(index) == records[index]
    assert list(reader) == records
    with pytest.raises(IndexError, match='record 5 is out of range'):
        reader.read(5)


def test_reads_use_one_pread_each(shard, monkeypatch):
    reader = IndexedTFRecord(shard)
    calls = []
    real_pread = os.pread
    monkeypatch.setattr(os, 'pread', lambda *args: calls.append(args) or real_pread(*args))
    reader.read(2)
    assert len(calls) == 1


def test_shard_without_index_is_scanned(shard):
    os.remove(tfrecord.index_path(shard))
    reader = IndexedTFRecord(shard)
    assert not reader.has_index_file
    assert [reader.read(index) for index in range(len(reader))] == records_of(5)


def test_empty_shard(tmp_path):
    path = tmp_path / 'empty.tfrecord'
    assert write_shard(path, []) == 0
    assert len(IndexedTFRecord(path)) == 0 and os.path.getsize(path) == 0


def test_reader_pickles_and_reopens(shard):
    reader = IndexedTFRecord(shard)
    reader.read(0)  # opens the file in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(4) == records_of(5)[4] and len(clone) == 5


def _flip_byte(path, position):
    with open(path, 'r+b') as file:
        file.seek(position)
        value = file.read(1)[0]
        file.seek(position)
        file.write(bytes([value ^ 0xFF]))


def test_flipped_data_byte_names_shard_and_record(shard):
    offsets = tfrecord.read_index(shard)
    _flip_byte(shard, int(offsets[3]) + 12 + 7)  # inside record 3's data
    reader = IndexedTFRecord(shard)
    assert reader.read(2) == records_of(5)[2]
    with pytest.raises(RecordError) as error:
        reader.read(3)
    assert (error.value.shard, error.value.index) == (shard, 3)
    assert 'data CRC mismatch' in error.value.reason
    assert shard in str(error.value) and 'record 3' in str(error.value)
    copied = pickle.loads(pickle.dumps(error.value))  # crosses Grain worker boundaries
    assert (copied.shard, copied.index, str(copied)) == (shard, 3, str(error.value))
    assert IndexedTFRecord(shard, verify_crc=False).read(3) != records_of(5)[3]
    problems = tfrecord.verify_tfrecord_shard(shard)
    assert len(problems) == 1 and 'record 3: data CRC mismatch' in problems[0]


def test_flipped_length_byte_is_caught_by_read_and_scan(shard):
    offsets = tfrecord.read_index(shard)
    _flip_byte(shard, int(offsets[1]))
    with pytest.raises(RecordError, match='record 1: length field says'):
        IndexedTFRecord(shard).read(1)
    with pytest.raises(RecordError, match='record 1: length CRC mismatch'):
        scan_offsets(shard)


def test_truncated_shard(shard):
    size = os.path.getsize(shard)
    with open(shard, 'r+b') as file:
        file.truncate(size - 10)
    with pytest.raises(RecordError) as error:
        scan_offsets(shard)
    assert (error.value.shard, error.value.index) == (shard, 4)
    assert 'truncated' in error.value.reason
    # The index still describes the full shard: refused as stale, naming the index file.
    with pytest.raises(RecordError, match=r'index file .*\.index: stale'):
        IndexedTFRecord(shard)
    os.remove(tfrecord.index_path(shard))
    with pytest.raises(RecordError, match='record 4: truncated'):
        IndexedTFRecord(shard)


def test_file_shrinking_after_open_is_a_truncated_record(shard):
    reader = IndexedTFRecord(shard)
    with open(shard, 'r+b') as file:
        file.truncate(os.path.getsize(shard) - 3)
    with pytest.raises(RecordError, match='record 4: truncated'):
        reader.read(4)


def test_write_shard_is_atomic(tmp_path):
    def failing_records():
        yield b'first'
        raise RuntimeError('producer failed')

    path = tmp_path / 'x.tfrecord'
    with pytest.raises(RuntimeError, match='producer failed'):
        write_shard(path, failing_records())
    assert os.listdir(tmp_path) == []


def test_rewriting_a_shard_replaces_its_index(tmp_path):
    path = tmp_path / 'x.tfrecord'
    write_shard(path, records_of(5))
    write_shard(path, [b'only'])
    assert list(IndexedTFRecord(path)) == [b'only']
    assert sorted(os.listdir(tmp_path)) == ['x.tfrecord', 'x.tfrecord.index']


# ----------------------------------------------------------------------------- schema





def test_schema_round_trip_all_fields():
    clip = make_clip()
    data = schema.encode_clip(clip)
    assert schema.encode_clip(clip) == data  # deterministic bytes
    assert_clips_equal(schema.decode_clip(data), clip)


def test_schema_feature_names():
    example = tf_example_pb2.Example.FromString(schema.encode_clip(make_clip(num_frames=2)))
    features = example.features.feature
    assert set(features) == {
        'schema/version', 'clip/id', 'clip/video_id', 'clip/source', 'clip/start', 'clip/end',
        'frames/jpeg', 'frames/time', 'text/narration', 'text/hod',
        'boxes/left_hand', 'boxes/right_hand', 'boxes/object', 'boxes/left_hand_valid',
        'boxes/right_hand_valid', 'boxes/object_valid', 'hands/left_contact',
        'hands/right_contact'}
    assert list(features['schema/version'].int64_list.value) == [1]
    assert len(features['boxes/object'].float_list.value) == 8


def test_empty_hod_round_trips():
    clip = make_clip()
    clip['hod'] = []
    assert schema.decode_clip(schema.encode_clip(clip))['hod'] == []


def _example_without(feature=None, **replace):
    example = tf_example_pb2.Example.FromString(schema.encode_clip(make_clip()))
    if feature:
        del example.features.feature[feature]
    for key, values in replace.items():
        feature_proto = example.features.feature[key.replace('__', '/')]
        kind = feature_proto.WhichOneof('kind')
        del getattr(feature_proto, kind).value[:]
        getattr(feature_proto, kind).value.extend(values)
    return example.SerializeToString()


@pytest.mark.parametrize('feature', ['schema/version', 'clip/id', 'frames/time',
                                     'boxes/object_valid', 'hands/left_contact', 'text/hod'])
def test_missing_feature_names_shard_index_feature(feature):
    with pytest.raises(RecordError) as error:
        schema.decode_clip(_example_without(feature), shard='s.tfrecord', index=7)
    assert (error.value.shard, error.value.index) == ('s.tfrecord', 7)
    assert f"feature '{feature}': missing" in str(error.value)


def test_wrong_schema_version():
    with pytest.raises(RecordError, match="'schema/version': version 2, this reader supports 1"):
        schema.decode_clip(_example_without(schema__version=[2]), shard='s', index=0)


@pytest.mark.parametrize('replace, feature', [
    ({'frames__time': [0.0, 1.0]}, 'frames/time'),
    ({'boxes__right_hand': [0.0] * 11}, 'boxes/right_hand'),
    ({'boxes__left_hand_valid': [1]}, 'boxes/left_hand_valid'),
    ({'boxes__object_valid': [0, 5, 0]}, 'boxes/object_valid'),
    ({'clip__start': [1.0, 2.0]}, 'clip/start'),
])
def test_inconsistent_lengths_and_values(replace, feature):
    with pytest.raises(RecordError, match=f"record 3: feature '{feature}'"):
        schema.decode_clip(_example_without(**replace), shard='s', index=3)


def test_wrong_feature_type_and_garbage():
    example = tf_example_pb2.Example.FromString(schema.encode_clip(make_clip()))
    example.features.feature['clip/start'].ClearField('float_list')
    example.features.feature['clip/start'].int64_list.value.append(1)
    with pytest.raises(RecordError, match="'clip/start': expected float_list, got int64_list"):
        schema.decode_clip(example.SerializeToString())
    with pytest.raises(RecordError, match='not a tf.train.Example'):
        schema.decode_clip(b'\xff\xff\xff garbage', shard='s', index=1)


def test_encode_rejects_inconsistent_clip():
    clip = make_clip()
    clip['frame_times'] = clip['frame_times'][:2]
    with pytest.raises(ValueError, match="clip 'clip-0': field 'frame_times'"):
        schema.encode_clip(clip)
    clip = make_clip()
    del clip['narration']
    with pytest.raises(ValueError, match="missing field 'narration'"):
        schema.encode_clip(clip)
    clip = make_clip()
    clip['box_valid']['object'] = np.array([0, 3, 1])
    with pytest.raises(ValueError, match=r"field 'box_valid\[object\]'"):
        schema.encode_clip(clip)


def test_jpeg_round_trip_within_tolerance(rng):
    smooth = np.clip(np.add.outer(np.arange(48) * 3, np.arange(64) * 2), 0, 255)
    frame = np.stack([smooth, smooth[::-1], np.full_like(smooth, 128)], -1).astype(np.uint8)
    decoded = schema.decode_jpeg(schema.encode_jpeg(frame, quality=95))
    assert decoded.shape == frame.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frame).mean() < 2.0
    assert schema.jpeg_size(schema.encode_jpeg(frame)) == (48, 64)


def test_undecodable_jpeg():
    with pytest.raises(ValueError, match='undecodable JPEG'):
        schema.decode_jpeg(b'not a jpeg')
    clip = make_clip()
    clip['frames_jpeg'][1] = clip['frames_jpeg'][1][:40]  # truncated JPEG
    frames = schema.decode_frames(clip, [0, 2], shard='s.tfrecord', index=5)
    assert frames.shape == (2, 24, 32, 3)
    with pytest.raises(RecordError, match=r's.tfrecord: record 5: feature frames/jpeg\[1\]'):
        schema.decode_frames(clip, shard='s.tfrecord', index=5)
