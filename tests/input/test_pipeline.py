"""The Grain input pipeline over real record shards written by the records package.

Every stored frame k of a test clip is uniform green `20 + 30k` (so the output reveals which
stored frames were sampled) over a red ramp that rises left to right (so it reveals a flip).
"""
import collections
import json
import os
import pickle
import shutil

import grain
import numpy as np
import pytest

from egovideo_jax.input import augment, pipeline
from egovideo_jax.input.config import DataConfig
from egovideo_jax.input.source import ClipRecordSource
from egovideo_jax.media import sampling
from egovideo_jax.media.transforms import CLIP_MEAN, CLIP_STD
from egovideo_jax.model.tokenizer import get_tokenizer
from egovideo_jax.records import dataset, schema, tfrecord
from egovideo_jax.records.tfrecord import RecordError

STORED_FRAMES, HEIGHT, WIDTH, CROP = 8, 40, 48, 32
NUM_CLIPS = 24  # 5 shards of up to 5 records


def _frame(stored_index: int) -> np.ndarray:
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, WIDTH).astype(np.uint8)
    frame[..., 1] = 20 + 30 * stored_index
    frame[..., 2] = 128
    return frame


_GOOD_JPEGS = [schema.encode_jpeg(_frame(k), quality=95) for k in range(STORED_FRAMES)]


def _clip(record: int, *, hod: bool = True, garbage_frames: bool = False) -> dict:
    # The writer reads frame 0's size, so a bad clip keeps it and breaks the others.
    frames = [_GOOD_JPEGS[0]] + [b'not a jpeg' if garbage_frames else jpeg
                                 for jpeg in _GOOD_JPEGS[1:]]
    return {
        'clip_id': f'clip{record}', 'video_id': f'video{record // 4}', 'source': 'demo',
        'start': float(record), 'end': record + 1.0, 'frames_jpeg': frames,
        'frame_times': np.linspace(record, record + 1, STORED_FRAMES, dtype=np.float32),
        'narration': f'C picks up cup {record} with the left hand',
        'hod': [f'the left hand lifts cup {record}', f'the left hand holds cup {record}']
        if hod else [],
        **schema.empty_tracks(STORED_FRAMES),
    }


def _write(directory, clips, records_per_shard=5, format='tfrecord') -> str:
    writer = dataset.DatasetWriter(directory, records_per_shard=records_per_shard, format=format)
    for clip in clips:
        writer.add(clip)
    writer.close()
    return str(directory)


@pytest.fixture(scope='module')
def clips_dir(tmp_path_factory):
    """24 clips; every fourth (3, 7, ...) has no HOD narration."""
    return _write(tmp_path_factory.mktemp('clips'),
                  [_clip(record, hod=record % 4 != 3) for record in range(NUM_CLIPS)])


@pytest.fixture(scope='module')
def bad_dir(tmp_path_factory):
    """8 clips in 2 shards of 4; record 5 (shard 1, record 1) has undecodable frames."""
    return _write(tmp_path_factory.mktemp('bad'),
                  [_clip(record, garbage_frames=record == 5) for record in range(8)],
                  records_per_shard=4)


def _config(path, **overrides) -> DataConfig:
    return DataConfig(**{'path': path, 'batch_size': 4, 'crop_size': CROP, **overrides})


def _pixels(branch: np.ndarray) -> np.ndarray:
    """Normalised frames back to [0, 255] levels."""
    return (branch * CLIP_STD + CLIP_MEAN) * 255.0


def _stored_frames(branch: np.ndarray) -> list[int]:
    green = _pixels(branch)[..., 1].mean(axis=(1, 2))
    return np.round((green - 20) / 30).astype(int).tolist()


def _flipped(branch: np.ndarray) -> bool:
    red = _pixels(branch)[0, :, :, 0]
    return bool(red[:, :CROP // 2].mean() > red[:, CROP // 2:].mean())


def _text(tokens: np.ndarray) -> str:
    tokenizer = get_tokenizer('clip')
    ids = tokens.tolist()
    return tokenizer.decode(ids[1:ids.index(tokenizer.eot_token_id)])


def _take(ds, count):
    return [ds[position] for position in range(count)]


# ----------------------------------------------------------------------------- source

def test_source_reads_records_with_their_location(clips_dir):
    source = ClipRecordSource(clips_dir)
    assert len(source) == NUM_CLIPS
    assert isinstance(source, grain.sources.RandomAccessDataSource)
    record = source[7]
    assert record.index == 7 and record.shard_index == 2
    assert record.shard.endswith('clips-00001-of-00005.tfrecord')
    assert schema.decode_clip(record.data)['clip_id'] == 'clip7'
    restored = pickle.loads(pickle.dumps(source))
    assert restored[23] == source[23]
    assert 'records=24' in repr(source)
    with pytest.raises(IndexError, match='record 24 is out of range'):
        source[24]


def test_source_reads_array_record_datasets(tmp_path):
    directory = _write(tmp_path / 'ar', [_clip(record) for record in range(3)],
                       format='arrayrecord')
    ds = pipeline.make_dataset(_config(directory), train=False)
    assert [example['index'] for example in _take(ds, 3)] == [0, 1, 2]


def test_iterator_needs_a_batch_that_divides_over_the_hosts(clips_dir):
    config = DataConfig(path=clips_dir, batch_size=8, crop_size=CROP, mode='single')
    with pytest.raises(ValueError, match='batch_size=8 is not divisible by the 3 hosts'):
        pipeline.make_iterator(config, train=True, process_count=3)


# ----------------------------------------------------------------------------- examples

def test_batches_have_the_documented_shapes_and_normalisation(clips_dir):
    iterator = pipeline.make_iterator(_config(clips_dir), train=False)
    batch = next(iterator)
    iterator.close()
    assert set(batch) == {'slow', 'fast', 'tokens', 'index'}
    assert batch['slow'].shape == (4, 4, CROP, CROP, 3) and batch['slow'].dtype == np.float32
    assert batch['fast'].shape == (4, 16, CROP, CROP, 3) and batch['fast'].dtype == np.float32
    assert batch['tokens'].shape == (4, 77) and batch['tokens'].dtype == np.int32
    assert batch['index'].dtype == np.int64 and batch['index'].tolist() == [0, 1, 2, 3]
    # Eval = stored frames [1, 3, 4, 6] -> short side to 32, centre crop -> CLIP normalisation.
    clip = schema.decode_clip(ClipRecordSource(clips_dir)[0].data)
    frames = schema.decode_frames(clip, [1, 3, 4, 6])
    expected = (augment.center_crop(frames, CROP) / np.float32(255) - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(batch['slow'][0], expected, rtol=0, atol=1e-6)
    single = pipeline.make_dataset(_config(clips_dir, mode='single'), train=True)[0]
    assert 'fast' not in single and single['slow'].shape == (4, CROP, CROP, 3)


def test_eval_samples_the_segment_middles(clips_dir):
    ds = pipeline.make_dataset(_config(clips_dir), train=False)
    expected_fast = sampling.sample_eval(0, STORED_FRAMES, 16).tolist()
    for record in (0, 13):
        example = ds[record]
        assert _stored_frames(example['slow']) == [1, 3, 4, 6]
        assert _stored_frames(example['fast']) == expected_fast
        assert not _flipped(example['slow'])
        expected = get_tokenizer('clip')(f'the left hand lifts cup {record}')[0]
        np.testing.assert_array_equal(example['tokens'], expected)


@pytest.mark.parametrize('swap', [True, False])
def test_train_jitters_inside_segments_and_flips_text_with_pixels(clips_dir, swap):
    ds = pipeline.make_dataset(_config(clips_dir, flip_swaps_sides=swap), train=True)
    flips = []
    for example in _take(ds, NUM_CLIPS):
        for branch, count in (('slow', 4), ('fast', 16)):
            frames = _stored_frames(example[branch])
            bounds = sampling.segment_bounds(0, STORED_FRAMES, count)
            assert all(low <= frame <= high for frame, (low, high) in zip(frames, bounds)), frames
        flipped = _flipped(example['slow'])
        assert _flipped(example['fast']) == flipped  # one flip per clip, both branches
        text = _text(example['tokens'])
        assert ('right hand' in text) == (flipped and swap), text
        assert ('left hand' in text) == (not flipped or not swap), text
        flips.append(flipped)
    assert 0 < sum(flips) < NUM_CLIPS


def test_hod_text_is_drawn_per_use_with_counted_fallback(clips_dir):
    ds = pipeline.make_dataset(_config(clips_dir, text_field='hod'), train=True)
    verbs = {record: set() for record in range(NUM_CLIPS)}
    for example in _take(ds, 3 * NUM_CLIPS):
        text = _text(example['tokens'])
        record = int(example['index'])
        if record % 4 == 3:
            assert text.startswith('c picks up cup') and example['text_fallback']
        else:
            verbs[record].add(text.split()[3])
            assert not example['text_fallback']
    assert set().union(*verbs.values()) == {'lifts', 'holds'}

    iterator = pipeline.make_iterator(_config(clips_dir), train=False)
    assert sum(len(batch['index']) for batch in iterator) == NUM_CLIPS
    assert pipeline.input_stats(iterator) == pipeline.InputStats(seen=24, text_fallbacks=6)
    iterator.close()

    narration = pipeline.make_dataset(_config(clips_dir, text_field='narration'), train=True)
    assert _text(narration[0]['tokens']).startswith('c picks up cup')


def test_mixed_text_draws_narrations_and_hod_narrations(clips_dir):
    ds = pipeline.make_dataset(_config(clips_dir, text_field='mixed'), train=True)
    starts = collections.Counter(_text(example['tokens']).split()[0]
                                 for example in _take(ds, 4 * NUM_CLIPS))
    assert set(starts) == {'c', 'the'} and min(starts.values()) > NUM_CLIPS // 2
    evaluation = pipeline.make_dataset(_config(clips_dir, text_field='mixed'), train=False)
    assert _text(evaluation[0]['tokens']).startswith('c picks up cup')


# ----------------------------------------------------------------------------- order, hosts

def _indices(ds, count):
    return [int(example['index']) for example in _take(ds, count)]


def test_shuffle_is_deterministic_by_seed_and_new_each_epoch(clips_dir):
    def order(seed):
        return _indices(pipeline.make_dataset(_config(clips_dir), train=True, seed=seed),
                        2 * NUM_CLIPS)

    first, again, other = order(0), order(0), order(1)
    assert first == again and first != other
    for epoch in (first[:NUM_CLIPS], first[NUM_CLIPS:], other[:NUM_CLIPS]):
        assert sorted(epoch) == list(range(NUM_CLIPS))
    assert first[:NUM_CLIPS] != first[NUM_CLIPS:]
    config_seed = pipeline.make_dataset(_config(clips_dir, seed=1), train=True)
    assert _indices(config_seed, NUM_CLIPS) == other[:NUM_CLIPS]


def test_hosts_take_disjoint_records_covering_the_dataset(clips_dir):
    config = _config(clips_dir)
    hosts = [pipeline.make_dataset(config, train=True, process_index=host, process_count=2)
             for host in range(2)]
    half = NUM_CLIPS // 2
    for epoch in range(2):
        taken = [_indices(host, 2 * half)[epoch * half:(epoch + 1) * half] for host in hosts]
        assert not set(taken[0]) & set(taken[1])
        assert sorted(taken[0] + taken[1]) == list(range(NUM_CLIPS))

    evals = [_indices(ds, len(ds)) for ds in (
        pipeline.make_dataset(config, train=False, process_index=host, process_count=5)
        for host in range(5))]
    assert evals == [list(range(host, NUM_CLIPS, 5)) for host in range(5)]
    # Training keeps hosts in step: 24 // 5 = 4 records per host per epoch, none shared.
    trains = [_indices(pipeline.make_dataset(config, train=True, process_index=host,
                                             process_count=5), 4) for host in range(5)]
    assert len({record for host in trains for record in host}) == 20


def test_examples_depend_only_on_seed_epoch_and_record(clips_dir):
    config = _config(clips_dir)
    whole = pipeline.make_dataset(config, train=True)
    half = pipeline.make_dataset(config, train=True, process_index=1, process_count=2)
    position_of = {int(whole[position]['index']): position for position in range(NUM_CLIPS)}
    for position in range(3):
        example = half[position]
        same = whole[position_of[int(example['index'])]]
        for key in ('slow', 'fast', 'tokens'):
            np.testing.assert_array_equal(example[key], same[key])


# ----------------------------------------------------------------------------- resume

def _batches_after_save(config, before: int, after: int):
    """The JSON state saved after `before` batches, and the `after` batches that follow."""
    iterator = pipeline.make_iterator(config, train=True)
    for _ in range(before):
        next(iterator)
    state = json.dumps(iterator.get_state())
    batches = [next(iterator) for _ in range(after)]
    iterator.close()
    return state, batches


def _batches_after_restore(config, state: str, count: int):
    iterator = pipeline.make_iterator(config, train=True)
    iterator.set_state(json.loads(state))
    batches = [next(iterator) for _ in range(count)]
    stats = pipeline.input_stats(iterator)
    iterator.close()
    return batches, stats


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for one, other in zip(first, second):
        assert one.keys() == other.keys()
        for key in one:
            np.testing.assert_array_equal(one[key], other[key], err_msg=key)


def test_resume_gives_the_exact_next_batches_in_process(clips_dir):
    # 24 records = 6 batches per epoch: 3 + 5 batches cross an epoch boundary.
    config = _config(clips_dir)
    state, straight = _batches_after_save(config, before=3, after=5)
    resumed, stats = _batches_after_restore(config, state, 5)
    _assert_same_batches(straight, resumed)
    assert stats.seen == 8 * 4
    unprefetched, _ = _batches_after_restore(_config(clips_dir, prefetch=0), state, 5)
    _assert_same_batches(straight, unprefetched)


def test_resume_gives_the_exact_next_batches_with_worker_processes(clips_dir):
    config = _config(clips_dir, worker_count=2)
    state, straight = _batches_after_save(config, before=3, after=5)
    resumed, _ = _batches_after_restore(config, state, 5)
    _assert_same_batches(straight, resumed)
    # Neither the batches nor the state depend on the worker count.
    _, in_process = _batches_after_save(_config(clips_dir), before=3, after=5)
    _assert_same_batches(straight, in_process)
    moved, _ = _batches_after_restore(_config(clips_dir, read_threads=1), state, 5)
    _assert_same_batches(straight, moved)


def test_restoring_a_state_of_another_stream_is_refused(clips_dir):
    state, _ = _batches_after_save(_config(clips_dir), before=1, after=0)
    with pytest.raises(ValueError, match=r'saved for another stream: seed 0 \(now 5\)'):
        _batches_after_restore(_config(clips_dir, seed=5), state, 1)


# ----------------------------------------------------------------------------- bad input

def _eval_batches(config):
    iterator = pipeline.make_iterator(config, train=False)
    try:
        return [batch['index'].tolist() for batch in iterator], pipeline.input_stats(iterator)
    finally:
        iterator.close()


@pytest.mark.parametrize('workers', [0, 2])
def test_bad_jpeg_fails_naming_shard_and_record(bad_dir, workers):
    with pytest.raises(RecordError, match=r'record 1: feature frames/jpeg\[1\]') as caught:
        _eval_batches(_config(bad_dir, batch_size=2, worker_count=workers))
    assert caught.value.shard == os.path.join(bad_dir, 'clips-00001-of-00002.tfrecord')
    assert caught.value.index == 1


def test_skip_drops_and_counts_bad_records(bad_dir):
    batches, stats = _eval_batches(_config(bad_dir, batch_size=2, on_error='skip',
                                           max_skip_fraction=0.2))
    assert batches == [[0, 1], [2, 3], [4, 6], [7]]
    assert (stats.seen, stats.skipped) == (8, 1)
    reason = 'clips-00001-of-00002.tfrecord: record 1: feature frames/jpeg[1]'
    assert reason in stats.skip_reasons[0]


@pytest.mark.parametrize('train', [False, True])
def test_skipping_more_than_the_limit_fails(bad_dir, train):
    # The limit is judged after min(100, records per epoch) = 8 records: the bad record is
    # the 6th, so the first three batches (7 records) still come out.
    config = _config(bad_dir, batch_size=2, on_error='skip', max_skip_fraction=0.1)
    iterator = pipeline.make_iterator(config, train=train)
    if not train:
        assert [next(iterator)['index'].tolist() for _ in range(3)] == [[0, 1], [2, 3], [4, 6]]
    with pytest.raises(pipeline.SkipLimitExceeded, match=r'skipped 1 of 8 records \(12.50%\)'):
        for _ in range(4):
            next(iterator)
    iterator.close()


def test_crc_mismatch_fails_naming_shard_and_record(clips_dir, tmp_path):
    directory = shutil.copytree(clips_dir, tmp_path / 'corrupt')
    shard = os.path.join(directory, 'clips-00000-of-00005.tfrecord')
    offset = int(tfrecord.IndexedTFRecord(shard).offsets[2]) + 12 + 40  # inside record 2's data
    with open(shard, 'r+b') as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RecordError, match='record 2: data CRC mismatch') as caught:
        _eval_batches(_config(str(directory)))
    assert caught.value.shard == shard and caught.value.index == 2
    batches, stats = _eval_batches(_config(str(directory), on_error='skip', max_skip_fraction=0.1))
    assert sum(batches, []) == [record for record in range(NUM_CLIPS) if record != 2]
    assert stats.skipped == 1 and 'data CRC mismatch' in stats.skip_reasons[0]
