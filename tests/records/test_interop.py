"""TensorFlow interop without TensorFlow: we read what TF wrote, and TF read what we wrote
(fixtures from tests/helpers/make_tf_fixture.py, see tests/data/README.md)."""
import hashlib
import json
import os

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from egovideo_jax.records import schema
from egovideo_jax.records.tfrecord import IndexedTFRecord, index_path, write_shard

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data')
TF_WRITTEN = os.path.join(DATA, 'tf_written.tfrecord')
OURS = os.path.join(DATA, 'ours_written.tfrecord')
JPEG_TOLERANCE = 8


def test_tf_written_simple_records():
    reader = IndexedTFRecord(TF_WRITTEN)
    assert not reader.has_index_file and len(reader) == 3  # indexed by scan
    first, second = (tf_example_pb2.Example.FromString(reader.read(index)).features.feature
                     for index in (0, 1))
    assert first['name'].bytes_list.value == [b'alpha']
    assert list(first['ints'].int64_list.value) == [1, -2, 3]
    assert list(first['floats'].float_list.value) == [0.5, 1.25]
    assert second['name'].bytes_list.value[0].decode() == 'beta \u00fcnic\u00f8de'
    assert list(second['ints'].int64_list.value) == [2 ** 40]
    assert list(second['floats'].float_list.value) == []


def test_tf_written_clip_decodes():
    clip = schema.decode_clip(IndexedTFRecord(TF_WRITTEN).read(2), shard=TF_WRITTEN, index=2)
    assert (clip['clip_id'], clip['video_id'], clip['source']) == ('tf-clip-0', 'tf-video', 'demo')
    assert (clip['start'], clip['end']) == (1.5, 2.5)
    np.testing.assert_allclose(clip['frame_times'], [1.75, 2.25])
    assert clip['narration'] == '#C C picks up the cup'
    assert clip['hod'] == ['the left hand lifts the cup upward']
    np.testing.assert_allclose(clip['boxes']['left_hand'],
                               [[0.1, 0.2, 0.3, 0.4], [0.15, 0.25, 0.35, 0.45]], rtol=1e-6)
    np.testing.assert_array_equal(clip['box_valid']['left_hand'], [1, 2])
    np.testing.assert_array_equal(clip['contact']['left'], [3, 3])
    frames = schema.decode_frames(clip)
    assert frames.shape == (2, 8, 8, 3)
    for frame, colour in zip(frames, [(255, 0, 0), (0, 0, 255)]):
        assert np.abs(frame.astype(int) - colour).max() <= JPEG_TOLERANCE


def test_tensorflow_read_our_file():
    with open(os.path.join(DATA, 'tf_read_ours.json')) as file:
        tf_result = json.load(file)
    with open(OURS, 'rb') as file:
        assert hashlib.sha256(file.read()).hexdigest() == tf_result['sha256']
    assert tf_result['num_records'] == len(IndexedTFRecord(OURS)) == 2
    assert tf_result['corrupt_copy_rejected'] is True
    clip = schema.decode_clip(IndexedTFRecord(OURS).read(1))
    seen = tf_result['clip']
    assert seen['clip/id'] == clip['clip_id'] and seen['schema/version'] == 1
    assert seen['text/narration'] == clip['narration'] and seen['text/hod'] == clip['hod']
    assert seen['frames/time'] == pytest.approx(clip['frame_times'].tolist())
    assert seen['boxes/right_hand'] == pytest.approx(clip['boxes']['right_hand'].ravel().tolist())
    assert seen['boxes/right_hand_valid'] == clip['box_valid']['right_hand'].tolist()
    assert seen['frame_shapes'] == [[8, 8, 3]] * 2


def test_our_writer_still_produces_the_file_tf_read(tmp_path):
    """Framing, index and clip encoding today give the very bytes TensorFlow accepted."""
    reader = IndexedTFRecord(OURS)
    records = list(reader)
    clip = schema.decode_clip(records[1])
    assert schema.encode_clip(clip) == records[1]
    rewritten = tmp_path / 'ours.tfrecord'
    write_shard(rewritten, records)
    for ours, committed in ((rewritten, OURS), (index_path(rewritten), index_path(OURS))):
        with open(ours, 'rb') as new, open(committed, 'rb') as old:
            assert new.read() == old.read()
