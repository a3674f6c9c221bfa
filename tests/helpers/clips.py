"""Random clip records (schema v1 fields), their field-by-field comparison, and a small
dataset directory of them."""
import numpy as np
import pytest

from egovideo_jax.records import DatasetWriter, schema

PRODUCER = {'command': 'pytest', 'config': {'seed': 0}}


def make_clip(num_frames=3, seed=0, height=24, width=32):
    gen = np.random.default_rng(seed)
    frames = [np.full((height, width, 3), 40 * index + 20, np.uint8) for index in range(num_frames)]
    tracks = schema.empty_tracks(num_frames)
    tracks['boxes']['left_hand'] = gen.uniform(0, 1, (num_frames, 4)).astype(np.float32)
    tracks['box_valid']['left_hand'] = np.arange(num_frames, dtype=np.int32) % 3
    tracks['contact']['right'] = np.arange(num_frames, dtype=np.int32) % 5
    return {
        'clip_id': f'clip-{seed}', 'video_id': 'vid-\u00e9', 'source': 'ego4d',
        'start': 1.25, 'end': 3.5,
        'frames_jpeg': [schema.encode_jpeg(frame) for frame in frames],
        'frame_times': np.linspace(1.25, 3.5, num_frames, endpoint=False).astype(np.float32),
        'narration': '#C C takes the scissors', 'hod': ['left hand grabs', 'right hand holds'],
        **tracks,
    }


LABEL_BLOCK_DEFAULTS = {'labels': {}, 'captions': [],
                        'caption_relevancy': np.zeros(0, np.float32)}


def assert_clips_equal(actual, expected):
    """`expected` may omit the optional label block (decode gives its empty defaults)."""
    expected = {**LABEL_BLOCK_DEFAULTS, **expected}
    assert set(actual) == set(expected)
    assert actual['labels'] == expected['labels']
    assert actual['captions'] == expected['captions']
    np.testing.assert_allclose(actual['caption_relevancy'], expected['caption_relevancy'])
    assert actual['caption_relevancy'].dtype == np.float32
    for key in ('clip_id', 'video_id', 'source', 'narration', 'hod', 'frames_jpeg'):
        assert actual[key] == expected[key], key
    assert actual['start'] == pytest.approx(expected['start'])
    assert actual['end'] == pytest.approx(expected['end'])
    np.testing.assert_allclose(actual['frame_times'], expected['frame_times'])
    for group in ('boxes', 'box_valid', 'contact'):
        assert set(actual[group]) == set(expected[group])
        for name in expected[group]:
            np.testing.assert_array_equal(actual[group][name], expected[group][name])
    assert actual['boxes']['object'].shape == (len(expected['frames_jpeg']), 4)
    assert actual['box_valid']['object'].dtype == np.int32


def write_dataset(directory, num_clips=5, records_per_shard=2, format='tfrecord'):
    clips = [make_clip(num_frames=3, seed=seed) for seed in range(num_clips)]
    clips[1]['hod'] = []
    with DatasetWriter(directory, records_per_shard=records_per_shard, format=format,
                       producer=PRODUCER, fps=30.0) as writer:
        for clip in clips:
            writer.add(clip)
    return clips
