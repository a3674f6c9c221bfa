"""The clip record schema: one `tf.train.Example` per clip (proto from tensorflow-datasets,
no TensorFlow), with encode/decode between it and a plain clip dict.

Schema version 1 (N = stored frames of the clip; every feature is required):

| feature                         | proto list | values | clip dict key (decoded type)        |
| ------------------------------- | ---------- | ------ | ----------------------------------- |
| `schema/version`                | int64      | 1      | (checked, == SCHEMA_VERSION)        |
| `clip/id`                       | bytes      | 1      | `clip_id` (str)                     |
| `clip/video_id`                 | bytes      | 1      | `video_id` (str)                    |
| `clip/source`                   | bytes      | 1      | `source` (str: ego4d, epic, csv...) |
| `clip/start`, `clip/end`        | float      | 1 each | `start`, `end` (float, seconds)     |
| `frames/jpeg`                   | bytes      | N      | `frames_jpeg` (list[bytes], JPEG)   |
| `frames/time`                   | float      | N      | `frame_times` (float32 [N], s)      |
| `text/narration`                | bytes      | 1      | `narration` (str)                   |
| `text/hod`                      | bytes      | >= 0   | `hod` (list[str])                   |
| `boxes/{B}`                     | float      | 4N     | `boxes[B]` (float32 [N, 4], xyxy)  |
| `boxes/{B}_valid`               | int64      | N      | `box_valid[B]` (int32 [N], 0..2)    |
| `hands/{H}_contact`             | int64      | N      | `contact[H]` (int32 [N], 0..4)      |

with B in `left_hand, right_hand, object` and H in `left, right`; box validity is 0 absent,
1 detected, 2 interpolated; contact is the 100DOH state 0..4. Strings are UTF-8; box
coordinates are normalised to [0, 1] by the frame width and height. Examples are serialised
deterministically (sorted feature keys), so the same clip always gives the same bytes.

Label block, version 1 (optional; for fine-tuning; K = caption candidates of the clip):

| feature                         | proto list | values | clip dict key (decoded type)        |
| ------------------------------- | ---------- | ------ | ----------------------------------- |
| `labels/version`                | int64      | 1      | (checked, == LABEL_BLOCK_VERSION)   |
| `labels/{L}`                    | int64      | 1      | `labels[L]` (int, class index >= 0) |
| `captions/text`                 | bytes      | K      | `captions` (list[str])              |
| `captions/relevancy`            | float      | K      | `caption_relevancy` (float32 [K])   |

with L in `verb, noun, action` (`LABEL_NAMES`), each present only when the clip has that
label; the class names behind the indices are the dataset directory's `classes.json`
(`egovideo_jax/records/classes.py`). Captions are the clip's relevancy-ranked caption
candidates (EK-100 MIR: sentences of relevancy > threshold), relevancy in [0, 1]; the two
caption features are written together and only when K > 0. The block is written only when a
clip has a label or a caption, and `labels/version` is then required. On encode `labels`,
`captions` and `caption_relevancy` are optional; decode always returns them (`{}`, `[]` and
an empty float32 array for a clip without the block). The block does not change
`schema/version` (still 1): records without it decode as before (labels `{}`), and records
with it are read by older readers, which look up only the features they know and ignore the
rest.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

from egovideo_jax.records.tfrecord import RecordError

SCHEMA_VERSION = 1
LABEL_BLOCK_VERSION = 1
LABEL_NAMES = ('verb', 'noun', 'action')
BOX_NAMES = ('left_hand', 'right_hand', 'object')
HAND_NAMES = ('left', 'right')
BOX_VALID_CODES = (0, 1, 2)  # absent, detected, interpolated
CONTACT_STATES = range(5)  # 100DOH: no contact, self, other person, portable, stationary
NARRATION_FEATURES = ('text/narration', 'text/hod')

_STRING_FIELDS = (('clip/id', 'clip_id'), ('clip/video_id', 'video_id'),
                  ('clip/source', 'source'), ('text/narration', 'narration'))
_TIME_FIELDS = (('clip/start', 'start'), ('clip/end', 'end'))


def empty_tracks(num_frames: int) -> dict:
    """`boxes`, `box_valid` and `contact` for a clip without detections (all absent)."""
    return {
        'boxes': {name: np.zeros((num_frames, 4), np.float32) for name in BOX_NAMES},
        'box_valid': {name: np.zeros(num_frames, np.int32) for name in BOX_NAMES},
        'contact': {hand: np.zeros(num_frames, np.int32) for hand in HAND_NAMES},
    }


# ----------------------------------------------------------------------------- encoding

def encode_clip(clip: dict) -> bytes:
    """Serialised Example of a clip dict (keys as in the module table); ValueError naming
    the clip and the field when something is missing or inconsistent."""
    clip_id = clip.get('clip_id', '?')

    def field(key):
        if key not in clip:
            raise ValueError(f'clip {clip_id!r}: missing field {key!r}')
        return clip[key]

    def check(ok, key, message):
        if not ok:
            raise ValueError(f'clip {clip_id!r}: field {key!r}: {message}')

    example = tf_example_pb2.Example()
    features = example.features.feature
    features['schema/version'].int64_list.value.append(SCHEMA_VERSION)
    for feature, key in _STRING_FIELDS:
        check(isinstance(field(key), str), key, f'expected str, got {type(clip[key]).__name__}')
        features[feature].bytes_list.value.append(clip[key].encode('utf-8'))
    for feature, key in _TIME_FIELDS:
        features[feature].float_list.value.append(float(field(key)))

    frames = list(field('frames_jpeg'))
    num_frames = len(frames)
    check(num_frames > 0, 'frames_jpeg', 'a clip needs at least one frame')
    check(all(isinstance(frame, bytes) for frame in frames), 'frames_jpeg',
          'expected a list of JPEG bytes')
    features['frames/jpeg'].bytes_list.value.extend(frames)
    times = np.asarray(field('frame_times'), np.float32)
    check(times.shape == (num_frames,), 'frame_times',
          f'expected shape ({num_frames},) for {num_frames} frames, got {times.shape}')
    features['frames/time'].float_list.value.extend(times.tolist())

    hod = field('hod')
    check(not isinstance(hod, str) and all(isinstance(text, str) for text in hod), 'hod',
          'expected a list of str')
    features['text/hod'].bytes_list.SetInParent()  # present even when empty
    features['text/hod'].bytes_list.value.extend(text.encode('utf-8') for text in hod)

    boxes, box_valid, contact = field('boxes'), field('box_valid'), field('contact')
    for name in BOX_NAMES:
        check(name in boxes and name in box_valid, 'boxes',
              f'missing {name!r} in boxes or box_valid')
        coords = np.asarray(boxes[name], np.float32)
        check(coords.shape == (num_frames, 4), f'boxes[{name}]',
              f'expected shape ({num_frames}, 4), got {coords.shape}')
        features[f'boxes/{name}'].float_list.value.extend(coords.reshape(-1).tolist())
        codes = np.asarray(box_valid[name])
        check(_valid_codes(codes, num_frames, BOX_VALID_CODES), f'box_valid[{name}]',
              f'expected {num_frames} integers in {list(BOX_VALID_CODES)}, got {codes!r}')
        features[f'boxes/{name}_valid'].int64_list.value.extend(codes.tolist())
    for hand in HAND_NAMES:
        check(hand in contact, 'contact', f'missing {hand!r}')
        codes = np.asarray(contact[hand])
        check(_valid_codes(codes, num_frames, CONTACT_STATES), f'contact[{hand}]',
              f'expected {num_frames} integers in {list(CONTACT_STATES)}, got {codes!r}')
        features[f'hands/{hand}_contact'].int64_list.value.extend(codes.tolist())
    _encode_label_block(clip, features, check)
    return example.SerializeToString(deterministic=True)


def _encode_label_block(clip: dict, features, check) -> None:
    labels = clip.get('labels') or {}
    check(isinstance(labels, Mapping), 'labels', f'expected a dict, got {type(labels).__name__}')
    for name, value in labels.items():
        check(name in LABEL_NAMES, 'labels', f'unknown label {name!r}; expected names from '
                                             f'{list(LABEL_NAMES)}')
        check(isinstance(value, (int, np.integer)) and not isinstance(value, bool)
              and value >= 0, f'labels[{name}]',
              f'expected a class index (int >= 0), got {value!r}')
    captions = clip.get('captions')
    captions = [] if captions is None else captions
    check(not isinstance(captions, str) and all(isinstance(text, str) for text in captions),
          'captions', 'expected a list of str')
    captions = list(captions)
    relevancy = clip.get('caption_relevancy')
    relevancy = np.asarray([] if relevancy is None else relevancy, np.float32)
    check(relevancy.shape == (len(captions),), 'caption_relevancy',
          f'expected shape ({len(captions)},) for {len(captions)} captions, got '
          f'{relevancy.shape}')
    check(bool(np.all((relevancy >= 0) & (relevancy <= 1))), 'caption_relevancy',
          f'values must be in [0, 1], got {relevancy.tolist()}')
    if not labels and not captions:
        return
    features['labels/version'].int64_list.value.append(LABEL_BLOCK_VERSION)
    for name, value in labels.items():
        features[f'labels/{name}'].int64_list.value.append(int(value))
    if captions:
        features['captions/text'].bytes_list.value.extend(text.encode('utf-8')
                                                          for text in captions)
        features['captions/relevancy'].float_list.value.extend(relevancy.tolist())


def _valid_codes(codes: np.ndarray, num_frames: int, allowed) -> bool:
    return (codes.shape == (num_frames,) and np.issubdtype(codes.dtype, np.integer)
            and bool(np.isin(codes, allowed).all()))


# ----------------------------------------------------------------------------- decoding

def decode_clip(data: bytes, *, shard: str = '', index: int = -1) -> dict:
    """The clip dict of a serialised Example; RecordError naming `shard`, `index` and the
    feature when it is not a valid schema-v1 clip. JPEG frames stay encoded (decode only the
    frames you sample, with `decode_frames`)."""
    example = tf_example_pb2.Example()
    try:
        example.ParseFromString(data)
    except Exception as error:  # protobuf raises its own DecodeError type per backend
        raise RecordError(shard, index, f'not a tf.train.Example: {error}') from error
    features = example.features.feature

    def fail(feature, message):
        raise RecordError(shard, index, f'feature {feature!r}: {message}')

    def values(feature, kind, count=None):
        if feature not in features:  # checked first: indexing a proto map inserts the key
            fail(feature, 'missing')
        found = features[feature].WhichOneof('kind')
        if found not in (kind, None):  # None: an empty Feature, read as an empty list
            fail(feature, f'expected {kind}, got {found}')
        result = getattr(features[feature], kind).value
        if count is not None and len(result) != count:
            fail(feature, f'expected {count} values, got {len(result)}')
        return result

    def text(feature, raw):
        try:
            return raw.decode('utf-8')
        except UnicodeDecodeError as error:
            fail(feature, f'not UTF-8: {error}')

    version = values('schema/version', 'int64_list', 1)[0]
    if version != SCHEMA_VERSION:
        fail('schema/version', f'version {version}, this reader supports {SCHEMA_VERSION}')
    clip = {key: text(feature, values(feature, 'bytes_list', 1)[0])
            for feature, key in _STRING_FIELDS}
    clip.update({key: float(values(feature, 'float_list', 1)[0])
                 for feature, key in _TIME_FIELDS})
    clip['frames_jpeg'] = list(values('frames/jpeg', 'bytes_list'))
    num_frames = len(clip['frames_jpeg'])
    clip['frame_times'] = np.array(values('frames/time', 'float_list', num_frames), np.float32)
    clip['hod'] = [text('text/hod', raw) for raw in values('text/hod', 'bytes_list')]

    def codes(feature, allowed):
        result = np.array(values(feature, 'int64_list', num_frames), np.int64)
        if not np.isin(result, allowed).all():
            fail(feature, f'values must be in {list(allowed)}, got {sorted(set(result.tolist()))}')
        return result.astype(np.int32)

    clip['boxes'] = {
        name: np.array(values(f'boxes/{name}', 'float_list', 4 * num_frames),
                       np.float32).reshape(num_frames, 4)
        for name in BOX_NAMES}
    clip['box_valid'] = {name: codes(f'boxes/{name}_valid', BOX_VALID_CODES)
                         for name in BOX_NAMES}
    clip['contact'] = {hand: codes(f'hands/{hand}_contact', CONTACT_STATES)
                       for hand in HAND_NAMES}
    clip.update(labels={}, captions=[], caption_relevancy=np.zeros(0, np.float32))
    block = sorted(feature for feature in features
                   if feature.startswith(('labels/', 'captions/')))
    if not block:
        return clip
    if 'labels/version' not in features:
        fail(block[0], 'part of the label block, but labels/version is missing')
    version = values('labels/version', 'int64_list', 1)[0]
    if version != LABEL_BLOCK_VERSION:
        fail('labels/version', f'label block version {version}, this reader supports '
                               f'{LABEL_BLOCK_VERSION}')
    known = {f'labels/{name}' for name in LABEL_NAMES} | {
        'labels/version', 'captions/text', 'captions/relevancy'}
    unknown = [feature for feature in block if feature not in known]
    if unknown:
        fail(unknown[0], f'unknown label block feature; labels are {list(LABEL_NAMES)}')
    for name in LABEL_NAMES:
        if f'labels/{name}' in features:
            value = values(f'labels/{name}', 'int64_list', 1)[0]
            if value < 0:
                fail(f'labels/{name}', f'class index must be >= 0, got {value}')
            clip['labels'][name] = int(value)
    has_text, has_relevancy = 'captions/text' in features, 'captions/relevancy' in features
    if has_text != has_relevancy:
        fail('captions/relevancy' if has_text else 'captions/text',
             'missing; captions/text and captions/relevancy go together')
    if has_text:
        clip['captions'] = [text('captions/text', raw)
                            for raw in values('captions/text', 'bytes_list')]
        relevancy = np.array(values('captions/relevancy', 'float_list', len(clip['captions'])),
                             np.float32)
        if not np.all((relevancy >= 0) & (relevancy <= 1)):
            fail('captions/relevancy', f'values must be in [0, 1], got {relevancy.tolist()}')
        clip['caption_relevancy'] = relevancy
    return clip


# ----------------------------------------------------------------------------- JPEG frames

def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f'expected a uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}')
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 `[H, W, 3]` RGB; ValueError when the bytes are not a decodable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert('RGB'))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f'undecodable JPEG ({len(data)} bytes): {error}') from error


def jpeg_size(data: bytes) -> tuple[int, int]:
    """`(height, width)` from the JPEG header alone (no pixel decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f'undecodable JPEG ({len(data)} bytes): {error}') from error
    return height, width


def decode_frames(clip: dict, indices: Sequence[int] | None = None, *, shard: str = '',
                  index: int = -1) -> np.ndarray:
    """uint8 `[len(indices), H, W, 3]` of the clip's stored frames `indices` (default all);
    an undecodable frame or frames of different sizes raise RecordError naming the frame."""
    if indices is None:
        indices = range(len(clip['frames_jpeg']))
    frames = []
    for frame_index in indices:
        try:
            frames.append(decode_jpeg(clip['frames_jpeg'][frame_index]))
        except ValueError as error:
            raise RecordError(shard, index,
                              f'feature frames/jpeg[{frame_index}]: {error}') from error
        if frames[-1].shape != frames[0].shape:
            raise RecordError(shard, index, f'feature frames/jpeg[{frame_index}]: size '
                                            f'{frames[-1].shape[:2]} differs from '
                                            f'{frames[0].shape[:2]} of the first sampled frame')
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
