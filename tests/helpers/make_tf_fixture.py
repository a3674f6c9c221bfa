"""Regenerates the TensorFlow interop fixtures in tests/data (the test suite needs no TF).

Run from the repository root, in this order:

    # 1. our writer (project environment): tests/data/ours_written.tfrecord (+ .index)
    python tests/helpers/make_tf_fixture.py ours
    # 2. TensorFlow (throwaway venv): tests/data/tf_written.tfrecord, and TF's reading of
    #    ours_written.tfrecord (CRC-checked) into tests/data/tf_read_ours.json
    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python tests/helpers/make_tf_fixture.py tf

Step 2 imports nothing from this project: it builds its clip example with `tf.train.Example`
from the schema table in egovideo_jax/records/schema.py.
"""
import hashlib
import json
import os
import sys
import tempfile

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
OURS = os.path.join(DATA, 'ours_written.tfrecord')
TF_WRITTEN = os.path.join(DATA, 'tf_written.tfrecord')
TF_READ_OURS = os.path.join(DATA, 'tf_read_ours.json')

# Contents of tf_written.tfrecord; tests/records/test_interop.py checks them.
SIMPLE_RECORDS = [
    {'name': 'alpha', 'ints': [1, -2, 3], 'floats': [0.5, 1.25]},
    {'name': 'beta \u00fcnic\u00f8de', 'ints': [2 ** 40], 'floats': []},
]
FRAME_COLOURS = [(255, 0, 0), (0, 0, 255)]  # solid 8x8 JPEG frames
TF_CLIP = {
    'clip_id': 'tf-clip-0', 'video_id': 'tf-video', 'source': 'demo', 'start': 1.5,
    'end': 2.5, 'frame_times': [1.75, 2.25], 'narration': '#C C picks up the cup',
    'hod': ['the left hand lifts the cup upward'],
    'boxes': {'left_hand': [[0.1, 0.2, 0.3, 0.4], [0.15, 0.25, 0.35, 0.45]],
              'right_hand': [[0, 0, 0, 0], [0, 0, 0, 0]],
              'object': [[0.5, 0.5, 0.75, 1.0], [0.5, 0.4, 0.75, 0.9]]},
    'box_valid': {'left_hand': [1, 2], 'right_hand': [0, 0], 'object': [1, 1]},
    'contact': {'left': [3, 3], 'right': [0, 0]},
}


def write_ours():
    """Our framing + schema: a simple Example and a schema-v1 clip."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import numpy as np
    from tensorflow_datasets.proto import tf_example_pb2

    from egovideo_jax.records import empty_tracks, encode_clip, encode_jpeg, write_shard

    simple = tf_example_pb2.Example()
    simple.features.feature['name'].bytes_list.value.append(b'ours')
    simple.features.feature['ints'].int64_list.value.extend([7, 8, 9])
    frames = [np.full((8, 8, 3), colour, np.uint8) for colour in FRAME_COLOURS]
    clip = {'clip_id': 'ours-clip-0', 'video_id': 'ours-video', 'source': 'demo',
            'start': 0.5, 'end': 1.5, 'frames_jpeg': [encode_jpeg(frame) for frame in frames],
            'frame_times': [0.75, 1.25], 'narration': '#C C opens the drawer',
            'hod': ['the right hand pulls the drawer', 'both hands open it'],
            **empty_tracks(2)}
    clip['box_valid']['right_hand'] = np.array([1, 2], np.int32)
    clip['boxes']['right_hand'][:] = [0.25, 0.5, 0.5, 0.75]
    count = write_shard(OURS, [simple.SerializeToString(deterministic=True), encode_clip(clip)])
    print(f'wrote {count} records to {OURS}')


def _clip_feature_spec(tf):
    spec = {key: tf.io.FixedLenFeature([], tf.string)
            for key in ('clip/id', 'clip/video_id', 'clip/source', 'text/narration')}
    spec.update({key: tf.io.FixedLenFeature([], tf.float32) for key in ('clip/start', 'clip/end')})
    spec['schema/version'] = tf.io.FixedLenFeature([], tf.int64)
    spec.update({key: tf.io.VarLenFeature(tf.string) for key in ('frames/jpeg', 'text/hod')})
    spec['frames/time'] = tf.io.VarLenFeature(tf.float32)
    for name in ('left_hand', 'right_hand', 'object'):
        spec[f'boxes/{name}'] = tf.io.VarLenFeature(tf.float32)
        spec[f'boxes/{name}_valid'] = tf.io.VarLenFeature(tf.int64)
    for hand in ('left', 'right'):
        spec[f'hands/{hand}_contact'] = tf.io.VarLenFeature(tf.int64)
    return spec


def write_and_read_with_tf():
    import tensorflow as tf

    def feature(kind, values):
        lists = {'bytes': lambda: tf.train.Feature(bytes_list=tf.train.BytesList(value=values)),
                 'float': lambda: tf.train.Feature(float_list=tf.train.FloatList(value=values)),
                 'int': lambda: tf.train.Feature(int64_list=tf.train.Int64List(value=values))}
        return lists[kind]()

    def example(features):
        return tf.train.Example(features=tf.train.Features(feature=features))

    records = [example({'name': feature('bytes', [record['name'].encode()]),
                        'ints': feature('int', record['ints']),
                        'floats': feature('float', record['floats'])})
               for record in SIMPLE_RECORDS]
    frames = [tf.io.encode_jpeg(tf.broadcast_to(tf.constant(colour, tf.uint8), [8, 8, 3]),
                                quality=95).numpy() for colour in FRAME_COLOURS]
    clip = TF_CLIP
    features = {
        'schema/version': feature('int', [1]),
        'clip/id': feature('bytes', [clip['clip_id'].encode()]),
        'clip/video_id': feature('bytes', [clip['video_id'].encode()]),
        'clip/source': feature('bytes', [clip['source'].encode()]),
        'clip/start': feature('float', [clip['start']]),
        'clip/end': feature('float', [clip['end']]),
        'frames/jpeg': feature('bytes', frames),
        'frames/time': feature('float', clip['frame_times']),
        'text/narration': feature('bytes', [clip['narration'].encode()]),
        'text/hod': feature('bytes', [text.encode() for text in clip['hod']]),
    }
    for name, boxes in clip['boxes'].items():
        features[f'boxes/{name}'] = feature('float', [v for box in boxes for v in box])
        features[f'boxes/{name}_valid'] = feature('int', clip['box_valid'][name])
    for hand, states in clip['contact'].items():
        features[f'hands/{hand}_contact'] = feature('int', states)
    records.append(example(features))
    with tf.io.TFRecordWriter(TF_WRITTEN) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    print(f'tensorflow {tf.__version__} wrote {len(records)} records to {TF_WRITTEN}')

    # TFRecordDataset checks both CRCs of every record and fails on a mismatch.
    raw = [record.numpy() for record in tf.data.TFRecordDataset(OURS)]
    simple = tf.train.Example.FromString(raw[0])
    parsed = tf.io.parse_single_example(raw[1], _clip_feature_spec(tf))
    dense = {key: (tf.sparse.to_dense(value) if isinstance(value, tf.sparse.SparseTensor)
                   else value).numpy() for key, value in parsed.items()}
    with open(OURS, 'rb') as file:
        data = file.read()
    sha256 = hashlib.sha256(data).hexdigest()
    # Shows the CRC check is live: the same file with one data byte flipped is refused.
    corrupt = os.path.join(tempfile.mkdtemp(), 'corrupt.tfrecord')
    with open(corrupt, 'wb') as file:
        file.write(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
    try:
        list(tf.data.TFRecordDataset(corrupt))
        corrupt_copy_rejected = False
    except tf.errors.DataLossError:
        corrupt_copy_rejected = True
    result = {
        'tensorflow_version': tf.__version__,
        'file': os.path.basename(OURS),
        'sha256': sha256,
        'num_records': len(raw),
        'corrupt_copy_rejected': corrupt_copy_rejected,
        'simple_record': {'name': simple.features.feature['name'].bytes_list.value[0].decode(),
                          'ints': list(simple.features.feature['ints'].int64_list.value)},
        'clip': {
            'clip/id': dense['clip/id'].decode(),
            'schema/version': int(dense['schema/version']),
            'clip/start': float(dense['clip/start']), 'clip/end': float(dense['clip/end']),
            'frames/time': dense['frames/time'].tolist(),
            'num_frames': len(dense['frames/jpeg']),
            'frame_shapes': [list(tf.io.decode_jpeg(jpeg).shape) for jpeg in dense['frames/jpeg']],
            'text/narration': dense['text/narration'].decode(),
            'text/hod': [text.decode() for text in dense['text/hod']],
            'boxes/right_hand': dense['boxes/right_hand'].tolist(),
            'boxes/right_hand_valid': dense['boxes/right_hand_valid'].tolist(),
        },
    }
    with open(TF_READ_OURS, 'w') as file:
        json.dump(result, file, indent=2)
        file.write('\n')
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    if sys.argv[1:] == ['ours']:
        write_ours()
    elif sys.argv[1:] == ['tf']:
        write_and_read_with_tf()
    else:
        sys.exit(__doc__)
