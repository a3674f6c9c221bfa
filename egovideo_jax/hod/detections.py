"""Hand-object detections per frame: data classes, the EPIC-KITCHENS-100 pickle format, our
JSONL format, and the registry of detection sources.

Data classes (frozen; coordinates normalised to [0, 1] by the frame width and height, x grows
to the right, y grows downward; constructors validate and raise ValueError naming the field):

    BBox(left, top, right, bottom)                   .center -> (x, y)
    HandDetection(bbox, score, state, object_offset, side)
        score           detector confidence in [0, 1]
        state           100DOH contact state: 0 no contact, 1 self contact, 2 another person,
                        3 portable object, 4 stationary object (`HAND_STATES`)
        object_offset   (x, y): vector from the hand centre towards the centre of the object
                        the hand touches (normalised units; (0, 0) when unknown)
        side            'left' | 'right'
    ObjectDetection(bbox, score)
    FrameDetections(frame_number, hands, objects)    .filtered(hand_threshold, object_threshold)

EPIC-KITCHENS-100 files (`read_epic_pickle`, `write_epic_pickle`): one pickle per video
holding a list of serialised `model.detections.Detections` protobuf messages, one per frame;
`frame_number` is the EPIC frame number (1-based). The proto schema is built here at import
time (no protoc); `DetectionsProto` is its message class. The files come from the internet, so
the pickle is read with an unpickler that admits nothing but a list of bytes.

JSONL files (`read_jsonl`, `write_jsonl`), for any external detector: UTF-8, one JSON object
per frame and line (blank lines ignored), with the same fields:

    {"video_id": "P01_01", "frame_number": 1,
     "hands": [{"bbox": [left, top, right, bottom], "score": 0.98, "state": 3,
                "object_offset": [x, y], "side": "right"}],
     "objects": [{"bbox": [left, top, right, bottom], "score": 0.87}]}

Sources (`DETECTION_SOURCES`, `make_detection_source(name, root, ...)`): `epic` reads
`{root}/{video_id}.pkl`, `jsonl` reads `{root}/{video_id}.jsonl`; `source.frames(video_id,
frame_numbers)` returns `{frame_number: FrameDetections}` for the requested frames present in
the file, with detections below the hand/object thresholds removed. Malformed files raise
`DetectionFormatError` naming the file, the frame and the field.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import math
import numbers
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HAND_STATES = ('no_contact', 'self_contact', 'another_person', 'portable_object',
               'stationary_object')
PORTABLE_OBJECT = 3
HAND_SIDES = ('left', 'right')  # proto HandSide: LEFT = 0, RIGHT = 1
DEFAULT_HAND_THRESHOLD = 0.5  # the EPIC-KITCHENS-100 release suggests 0.5 for both
DEFAULT_OBJECT_THRESHOLD = 0.5
_COORD_TOLERANCE = 1e-6  # float32 storage may nudge 0 or 1 slightly out of range


class DetectionFormatError(ValueError):
    """A detection file that does not follow its documented format."""


# ----------------------------------------------------------------------------- data classes

@dataclasses.dataclass(frozen=True)
class BBox:
    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self):
        for name in ('left', 'top', 'right', 'bottom'):
            value = getattr(self, name)
            if not (_is_number(value) and -_COORD_TOLERANCE <= value <= 1 + _COORD_TOLERANCE):
                raise ValueError(f'bbox.{name}: expected a normalised coordinate in [0, 1], '
                                 f'got {value!r}')
            object.__setattr__(self, name, float(value))  # numpy scalars -> plain floats
        if self.right < self.left or self.bottom < self.top:
            raise ValueError(f'bbox: expected left <= right and top <= bottom, got {self}')

    @property
    def center(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def as_list(self) -> list[float]:
        return [self.left, self.top, self.right, self.bottom]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bbox(bbox) -> None:
    if not isinstance(bbox, BBox):
        raise ValueError(f'bbox: expected a BBox, got {type(bbox).__name__}')


def _checked_score(score) -> float:
    if not (_is_number(score) and 0 <= score <= 1):
        raise ValueError(f'score: expected a number in [0, 1], got {score!r}')
    return float(score)


@dataclasses.dataclass(frozen=True)
class HandDetection:
    bbox: BBox
    score: float
    state: int
    object_offset: tuple[float, float]
    side: str

    def __post_init__(self):
        _check_bbox(self.bbox)
        object.__setattr__(self, 'score', _checked_score(self.score))
        if not (_is_integer(self.state) and self.state in range(len(HAND_STATES))):
            raise ValueError(f'state: expected a contact state 0..4, got {self.state!r}')
        object.__setattr__(self, 'state', int(self.state))
        if self.side not in HAND_SIDES:
            raise ValueError(f'side: expected "left" or "right", got {self.side!r}')
        offset = tuple(self.object_offset)
        if len(offset) != 2 or not all(_is_number(value) for value in offset):
            raise ValueError(f'object_offset: expected two finite numbers, got {offset!r}')
        object.__setattr__(self, 'object_offset', (float(offset[0]), float(offset[1])))


@dataclasses.dataclass(frozen=True)
class ObjectDetection:
    bbox: BBox
    score: float

    def __post_init__(self):
        _check_bbox(self.bbox)
        object.__setattr__(self, 'score', _checked_score(self.score))


@dataclasses.dataclass(frozen=True)
class FrameDetections:
    frame_number: int
    hands: tuple[HandDetection, ...] = ()
    objects: tuple[ObjectDetection, ...] = ()

    def __post_init__(self):
        if not _is_integer(self.frame_number):
            raise ValueError(f'frame_number: expected an integer, got {self.frame_number!r}')
        object.__setattr__(self, 'frame_number', int(self.frame_number))
        object.__setattr__(self, 'hands', tuple(self.hands))
        object.__setattr__(self, 'objects', tuple(self.objects))

    def filtered(self, hand_threshold: float, object_threshold: float) -> FrameDetections:
        """Only the detections scoring at least the thresholds."""
        return FrameDetections(
            self.frame_number,
            tuple(hand for hand in self.hands if hand.score >= hand_threshold),
            tuple(obj for obj in self.objects if obj.score >= object_threshold))


# ----------------------------------------------------------------------------- proto schema

def _build_proto_file() -> descriptor_pb2.FileDescriptorProto:
    """The EPIC-KITCHENS-100 `model.detections` schema (proto3), as protoc would describe it."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name='egovideo_jax/hod/epic_detections.proto', package='model.detections',
        syntax='proto3')

    def message(name, fields):
        proto = file.message_type.add(name=name)
        for number, (field_name, field_type, type_name) in enumerate(fields, start=1):
            label = field.LABEL_REPEATED if field_name in ('hands', 'objects') else (
                field.LABEL_OPTIONAL)
            added = proto.field.add(name=field_name, number=number, label=label,
                                    type=field_type)
            if type_name:  # only message and enum fields name a type
                added.type_name = f'.model.detections.{type_name}'
        return proto

    message('FloatVector', [('x', field.TYPE_FLOAT, ''), ('y', field.TYPE_FLOAT, '')])
    message('BBox', [(name, field.TYPE_FLOAT, '') for name in ('left', 'top', 'right', 'bottom')])
    hand = message('HandDetection', [
        ('bbox', field.TYPE_MESSAGE, 'BBox'),
        ('score', field.TYPE_FLOAT, ''),
        ('state', field.TYPE_ENUM, 'HandDetection.HandState'),
        ('object_offset', field.TYPE_MESSAGE, 'FloatVector'),
        ('side', field.TYPE_ENUM, 'HandDetection.HandSide'),
    ])
    for enum_name, values in (('HandState', [state.upper() for state in HAND_STATES]),
                              ('HandSide', [side.upper() for side in HAND_SIDES])):
        enum = hand.enum_type.add(name=enum_name)
        for number, value_name in enumerate(values):
            enum.value.add(name=value_name, number=number)
    message('ObjectDetection', [('bbox', field.TYPE_MESSAGE, 'BBox'),
                                ('score', field.TYPE_FLOAT, '')])
    message('Detections', [('video_id', field.TYPE_STRING, ''),
                           ('frame_number', field.TYPE_INT32, ''),
                           ('hands', field.TYPE_MESSAGE, 'HandDetection'),
                           ('objects', field.TYPE_MESSAGE, 'ObjectDetection')])
    return file


def _build_detections_class():
    # A private pool: another copy of the EPIC schema registered elsewhere cannot clash.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_build_proto_file())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName('model.detections.Detections'))


DetectionsProto = _build_detections_class()


def frame_to_proto(video_id: str, frame: FrameDetections):
    message = DetectionsProto(video_id=video_id, frame_number=frame.frame_number)
    for hand in frame.hands:
        proto = message.hands.add(score=hand.score, state=hand.state,
                                  side=HAND_SIDES.index(hand.side))
        _fill_bbox(proto.bbox, hand.bbox)
        proto.object_offset.x, proto.object_offset.y = hand.object_offset
    for obj in frame.objects:
        _fill_bbox(message.objects.add(score=obj.score).bbox, obj.bbox)
    return message


def _fill_bbox(proto, bbox: BBox) -> None:
    proto.left, proto.top, proto.right, proto.bottom = bbox.as_list()


def frame_from_proto(message) -> FrameDetections:
    """ValueError naming the hand/object index and field when the message is out of range."""
    def box(proto):
        return BBox(proto.left, proto.top, proto.right, proto.bottom)

    hands, objects = [], []
    for index, proto in enumerate(message.hands):
        with _field_context(f'hands[{index}]'):
            if proto.side not in range(len(HAND_SIDES)):
                raise ValueError(f'side: expected LEFT (0) or RIGHT (1), got {proto.side}')
            hands.append(HandDetection(box(proto.bbox), proto.score, proto.state,
                                       (proto.object_offset.x, proto.object_offset.y),
                                       HAND_SIDES[proto.side]))
    for index, proto in enumerate(message.objects):
        with _field_context(f'objects[{index}]'):
            objects.append(ObjectDetection(box(proto.bbox), proto.score))
    return FrameDetections(message.frame_number, tuple(hands), tuple(objects))


@contextlib.contextmanager
def _field_context(where: str):
    """Prefixes a ValueError raised inside with `where: `."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f'{where}: {error}') from error


# ----------------------------------------------------------------------------- EPIC pickles

def _latin1_bytes(text, encoding):
    if not isinstance(text, str) or encoding != 'latin1':
        raise pickle.UnpicklingError('_codecs.encode is admitted only as str -> latin1 bytes')
    return text.encode('latin1')


def _empty_bytes(*args):
    if args:
        raise pickle.UnpicklingError('bytes() is admitted only without arguments')
    return b''


# Pickle protocols 0-2 spell bytes with these two calls; each is replaced by a guarded
# stand-in that can only make bytes. Every other global is refused: globals are how a pickle
# runs code.
_BYTES_GLOBALS = {('_codecs', 'encode'): _latin1_bytes, ('__builtin__', 'bytes'): _empty_bytes,
                  ('builtins', 'bytes'): _empty_bytes}


class _BytesListUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _BYTES_GLOBALS:
            return _BYTES_GLOBALS[module, name]
        raise pickle.UnpicklingError(f'refusing global {module}.{name}')


def read_epic_pickle(path: str | os.PathLike) -> list[FrameDetections]:
    """The frames of one EPIC-KITCHENS-100 detection pickle, in file order."""
    try:
        with open(path, 'rb') as file:
            payload = _BytesListUnpickler(file).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as error:
        raise DetectionFormatError(f'{path}: not a pickled list of bytes: {error}') from error
    if not isinstance(payload, list):
        raise DetectionFormatError(
            f'{path}: expected a pickled list of bytes, got {type(payload).__name__}')
    frames = []
    for index, data in enumerate(payload):
        if not isinstance(data, bytes):
            raise DetectionFormatError(
                f'{path}: item {index}: expected bytes, got {type(data).__name__}')
        try:
            message = DetectionsProto.FromString(data)
            frames.append(frame_from_proto(message))
        except Exception as error:  # protobuf's DecodeError type differs per backend
            raise DetectionFormatError(f'{path}: item {index}: {error}') from error
    return frames


def write_epic_pickle(path: str | os.PathLike, video_id: str,
                      frames: Iterable[FrameDetections]) -> None:
    """Writes `frames` as an EPIC-KITCHENS-100 detection pickle (atomically)."""
    messages = [frame_to_proto(video_id, frame).SerializeToString(deterministic=True)
                for frame in frames]
    _write_atomically(path, pickle.dumps(messages, protocol=4))


# ----------------------------------------------------------------------------- JSONL

def frame_to_dict(video_id: str, frame: FrameDetections) -> dict:
    """The JSONL object of one frame (see the module docstring)."""
    return {
        'video_id': video_id,
        'frame_number': frame.frame_number,
        'hands': [{'bbox': hand.bbox.as_list(), 'score': hand.score, 'state': hand.state,
                   'object_offset': list(hand.object_offset), 'side': hand.side}
                  for hand in frame.hands],
        'objects': [{'bbox': obj.bbox.as_list(), 'score': obj.score} for obj in frame.objects],
    }


def frame_from_dict(record: dict) -> FrameDetections:
    """ValueError naming the field when `record` does not follow the JSONL format."""
    def get(mapping, key, kind):
        if not isinstance(mapping, dict) or key not in mapping:
            raise ValueError(f'{key}: missing')
        value = mapping[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f'{key}: expected {_KIND_NAMES[kind]}, got {value!r}')
        return value

    def box(mapping):
        values = get(mapping, 'bbox', list)
        if len(values) != 4:
            raise ValueError(f'bbox: expected [left, top, right, bottom], got {values!r}')
        return BBox(*values)

    get(record, 'video_id', str)
    hands = []
    for index, hand in enumerate(get(record, 'hands', list)):
        with _field_context(f'hands[{index}]'):
            hands.append(HandDetection(box(hand), get(hand, 'score', (int, float)),
                                       get(hand, 'state', int),
                                       tuple(get(hand, 'object_offset', list)),
                                       get(hand, 'side', str)))
    objects = []
    for index, obj in enumerate(get(record, 'objects', list)):
        with _field_context(f'objects[{index}]'):
            objects.append(ObjectDetection(box(obj), get(obj, 'score', (int, float))))
    return FrameDetections(get(record, 'frame_number', int), tuple(hands), tuple(objects))


_KIND_NAMES = {str: 'a string', int: 'an integer', list: 'a list', (int, float): 'a number'}


def read_jsonl(path: str | os.PathLike) -> list[FrameDetections]:
    """The frames of one JSONL detection file, in file order."""
    frames = []
    with open(path, encoding='utf-8') as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                frames.append(frame_from_dict(json.loads(line)))
            except ValueError as error:  # json.JSONDecodeError is a ValueError too
                raise DetectionFormatError(f'{path}:{line_number}: {error}') from error
    return frames


def write_jsonl(path: str | os.PathLike, video_id: str,
                frames: Iterable[FrameDetections]) -> None:
    """Writes `frames` as a JSONL detection file (atomically)."""
    buffer = io.StringIO()
    for frame in frames:
        buffer.write(json.dumps(frame_to_dict(video_id, frame)) + '\n')
    _write_atomically(path, buffer.getvalue().encode('utf-8'))


def _write_atomically(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    temp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    with open(temp, 'wb') as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


# ----------------------------------------------------------------------------- sources

class DetectionSource:
    """Per-video detection files under `root`, named `{video_id}{suffix}`.

    `frames(video_id, frame_numbers)` -> `{frame_number: FrameDetections}` for the requested
    frames found in the file (a frame the file lacks is left out: no detections), each with
    the detections below `hand_threshold` / `object_threshold` removed. The last
    `cache_videos` files read are kept in memory, since clips of one video come together.
    """
    suffix: str = ''
    read_file: Callable[[str | os.PathLike], list[FrameDetections]]

    def __init__(self, root: str | os.PathLike, hand_threshold: float = DEFAULT_HAND_THRESHOLD,
                 object_threshold: float = DEFAULT_OBJECT_THRESHOLD, cache_videos: int = 4):
        self.root = Path(root)
        self.hand_threshold = hand_threshold
        self.object_threshold = object_threshold
        self._cache_videos = cache_videos
        self._cache: collections.OrderedDict[str, dict[int, FrameDetections]] = (
            collections.OrderedDict())

    def path(self, video_id: str) -> Path:
        if not video_id or '/' in video_id or '\\' in video_id or video_id in ('.', '..'):
            raise ValueError(f'video_id {video_id!r}: not a plain file name')
        return self.root / f'{video_id}{self.suffix}'

    def frames(self, video_id: str, frame_numbers: Iterable[int]) -> dict[int, FrameDetections]:
        video = self._video(video_id)
        return {number: video[number].filtered(self.hand_threshold, self.object_threshold)
                for number in frame_numbers if number in video}

    def _video(self, video_id: str) -> dict[int, FrameDetections]:
        if video_id in self._cache:
            self._cache.move_to_end(video_id)
            return self._cache[video_id]
        path = self.path(video_id)
        if not path.exists():
            raise FileNotFoundError(f'no detections for video {video_id!r}: {path} does not exist')
        video = {}
        for frame in self.read_file(path):
            if frame.frame_number in video:
                raise DetectionFormatError(f'{path}: frame_number {frame.frame_number} '
                                           'appears more than once')
            video[frame.frame_number] = frame
        self._cache[video_id] = video
        while len(self._cache) > self._cache_videos:
            self._cache.popitem(last=False)
        return video


class EpicSource(DetectionSource):
    """EPIC-KITCHENS-100 pickles `{root}/{video_id}.pkl`; frame numbers are EPIC's, 1-based."""
    suffix = '.pkl'
    read_file = staticmethod(read_epic_pickle)


class JsonlSource(DetectionSource):
    """Our JSONL files `{root}/{video_id}.jsonl`."""
    suffix = '.jsonl'
    read_file = staticmethod(read_jsonl)


DETECTION_SOURCES: dict[str, type[DetectionSource]] = {
    'epic': EpicSource,
    'jsonl': JsonlSource,
}


def make_detection_source(name: str, root: str | os.PathLike, **options) -> DetectionSource:
    """`DETECTION_SOURCES[name](root, **options)`; options: hand_threshold, object_threshold,
    cache_videos."""
    if name not in DETECTION_SOURCES:
        raise ValueError(f'unknown detection source {name!r}; expected one of '
                         f'{sorted(DETECTION_SOURCES)}')
    return DETECTION_SOURCES[name](root, **options)


__all__ = [
    'BBox', 'DETECTION_SOURCES', 'DetectionFormatError', 'DetectionSource', 'DetectionsProto',
    'EpicSource', 'FrameDetections', 'HAND_SIDES', 'HAND_STATES', 'HandDetection',
    'JsonlSource', 'ObjectDetection', 'PORTABLE_OBJECT', 'frame_from_dict', 'frame_from_proto',
    'frame_to_dict', 'frame_to_proto', 'make_detection_source', 'read_epic_pickle',
    'read_jsonl', 'write_epic_pickle', 'write_jsonl',
]
