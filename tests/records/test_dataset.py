"""ArrayRecord shards, DatasetWriter / open_dataset / manifest / verify
(egovideo_jax.records.arrayrecord, dataset)."""
import json
import os
import pickle
import shutil

import pytest

from egovideo_jax.records import schema
from egovideo_jax.records.arrayrecord import IndexedArrayRecord, write_array_record_shard
from egovideo_jax.records.dataset import MANIFEST_NAME, DatasetWriter, open_dataset, verify_dataset
from egovideo_jax.records.tfrecord import RecordError, index_path, write_shard
from tests.helpers.clips import PRODUCER, assert_clips_equal, make_clip, write_dataset


def test_array_record_round_trip(tmp_path):
    path = tmp_path / 'x.array_record'
    records = [bytes([index]) * (10 + index) for index in range(7)]
    assert write_array_record_shard(path, records) == 7
    reader = IndexedArrayRecord(path)
    assert len(reader) == 7
    assert [reader.read(index) for index in (6, 0, 3)] == [records[6], records[0], records[3]]
    assert list(pickle.loads(pickle.dumps(reader))) == records
    with pytest.raises(IndexError, match='record 7 is out of range'):
        reader.read(7)


def test_array_record_write_is_atomic(tmp_path):
    def failing():
        yield b'a'
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError):
        write_array_record_shard(tmp_path / 'x.array_record', failing())
    assert os.listdir(tmp_path) == []




@pytest.mark.parametrize('format, extension', [('tfrecord', '.tfrecord'),
                                               ('arrayrecord', '.array_record')])
def test_dataset_round_trip_and_manifest(tmp_path, format, extension):
    clips = write_dataset(tmp_path, format=format)
    names = [f'clips-0000{shard}-of-00003{extension}' for shard in range(3)]
    expected_files = names + ([index_path(name) for name in names] if format == 'tfrecord' else [])
    assert sorted(os.listdir(tmp_path)) == sorted(expected_files + [MANIFEST_NAME])
    with open(tmp_path / MANIFEST_NAME) as file:
        manifest = json.load(file)
    assert manifest['schema_version'] == 1 and manifest['format'] == format
    assert manifest['num_records'] == 5
    assert [shard['file'] for shard in manifest['shards']] == names
    assert [shard['num_records'] for shard in manifest['shards']] == [2, 2, 1]
    assert all(len(shard['sha256']) == 64 for shard in manifest['shards'])
    assert manifest['frames_per_clip'] == 3 and manifest['frame_sizes'] == [[24, 32]]
    assert manifest['min_short_side'] == 24 and manifest['fps'] == 30.0
    assert manifest['narration_fields'] == ['text/narration', 'text/hod']
    assert manifest['producer'] == PRODUCER

    dataset = open_dataset(tmp_path)
    assert len(dataset) == 5 and dataset.manifest == manifest
    assert dataset.locate(0) == (str(tmp_path / names[0]), 0)
    assert dataset.locate(3) == (str(tmp_path / names[1]), 1)
    assert dataset.locate(4) == (str(tmp_path / names[2]), 0)
    for index in (4, 0, 2):
        assert_clips_equal(dataset.decode(index), clips[index])
    assert dataset[1] == schema.encode_clip(clips[1]) == dataset.read(1)
    assert_clips_equal(schema.decode_clip(pickle.loads(pickle.dumps(dataset)).read(3)), clips[3])
    with pytest.raises(IndexError, match='record 5 is out of range'):
        dataset.read(5)
    assert dataset.verify() == []


def test_writer_refuses_a_directory_with_a_dataset(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(FileExistsError, match='already holds a dataset'):
        DatasetWriter(tmp_path)


def test_writer_error_mid_way_leaves_no_final_files(tmp_path):
    with pytest.raises(RuntimeError, match='decoder crashed'):
        with DatasetWriter(tmp_path, records_per_shard=2) as writer:
            for seed in range(3):  # one full shard published under a temporary name
                writer.add(make_clip(seed=seed))
            raise RuntimeError('decoder crashed')
    assert os.listdir(tmp_path) == []


def test_invalid_clip_is_rejected_before_writing(tmp_path):
    clip = make_clip()
    clip['frame_times'] = clip['frame_times'][:1]
    with DatasetWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match='frame_times'):
            writer.add(clip)
        writer.add(make_clip())
    assert len(open_dataset(tmp_path)) == 1


def test_empty_dataset(tmp_path):
    with DatasetWriter(tmp_path):
        pass
    assert len(open_dataset(tmp_path)) == 0 and verify_dataset(tmp_path) == []


def test_missing_manifest_shard_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        open_dataset(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match=r'no manifest.json and no \*.tfrecord'):
        open_dataset(tmp_path)
    write_dataset(tmp_path)
    missing = tmp_path / 'clips-00001-of-00003.tfrecord'
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=f'lists shard {missing}, which does not exist'):
        open_dataset(tmp_path)
    assert any(str(missing) in problem for problem in verify_dataset(tmp_path))


def test_manifest_shard_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    with open(tmp_path / MANIFEST_NAME) as file:
        manifest = json.load(file)
    manifest['shards'] = manifest['shards'][:2]
    with open(tmp_path / MANIFEST_NAME, 'w') as file:
        json.dump(manifest, file)
    with pytest.raises(ValueError, match='lists 2 shards, but shard clips-00000-of-00003'):
        open_dataset(tmp_path)
    assert any('also holds clips-00002-of-00003.tfrecord' in problem
               for problem in verify_dataset(tmp_path))


def test_manifest_record_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    with open(tmp_path / MANIFEST_NAME) as file:
        manifest = json.load(file)
    manifest['shards'][0]['num_records'] = 3
    with open(tmp_path / MANIFEST_NAME, 'w') as file:
        json.dump(manifest, file)
    with pytest.raises(ValueError, match='clips-00000-of-00003.tfrecord: manifest.json says 3 '
                                         'records, the shard has 2'):
        open_dataset(tmp_path)


def test_verify_reports_checksum_and_crc(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / 'clips-00001-of-00003.tfrecord'
    data = bytearray(shard.read_bytes())
    data[len(data) // 4] ^= 0xFF
    shard.write_bytes(bytes(data))
    dataset = open_dataset(tmp_path)  # same size: the index still matches
    problems = dataset.verify()
    assert any(f'{shard}: sha256 differs' in problem for problem in problems)
    assert any(f'{shard}: record 0: data CRC mismatch' in problem for problem in problems)
    with pytest.raises(RecordError, match='record 0: data CRC mismatch'):
        dataset.read(2)


def test_directory_of_foreign_tfrecords(tmp_path):
    clips = [make_clip(seed=seed) for seed in range(3)]
    write_shard(tmp_path / 'other-b.tfrecord', [schema.encode_clip(clips[2])])
    write_shard(tmp_path / 'other-a.tfrecord-00000-of-00001',
                [schema.encode_clip(clip) for clip in clips[:2]])
    os.remove(index_path(tmp_path / 'other-b.tfrecord'))  # another tool: no index
    dataset = open_dataset(tmp_path)
    assert dataset.manifest is None and len(dataset) == 3
    assert [os.path.basename(shard.path) for shard in dataset.shards] == [
        'other-a.tfrecord-00000-of-00001', 'other-b.tfrecord']
    assert_clips_equal(dataset.decode(2), clips[2])
    assert verify_dataset(tmp_path) == []


def test_verify_checks_the_schema(tmp_path):
    write_shard(tmp_path / 'x.tfrecord', [schema.encode_clip(make_clip()), b'not an example'])
    problems = verify_dataset(tmp_path)
    assert len(problems) == 1 and 'x.tfrecord: record 1: not a tf.train.Example' in problems[0]


def test_copied_dataset_stays_valid(tmp_path):
    write_dataset(tmp_path / 'a')
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    assert len(open_dataset(tmp_path / 'b')) == 5 and verify_dataset(tmp_path / 'b') == []
