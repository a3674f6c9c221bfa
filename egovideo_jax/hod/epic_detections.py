"""EPIC-KITCHENS-100 detection files: one pickle per video holding a list of serialised
`model.detections.Detections` protobuf messages, one per frame; `frame_number` is the EPIC
frame number (1-based).

The proto schema is built here at import time (no protoc); `DetectionsProto` is its message
class. The files come from the internet, so the pickle is read with `io.safe_pickle`'s
restricted unpickler, admitting nothing but a list of bytes. Malformed files raise
`DetectionFormatError` naming the file, the item and the field.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from egovideo_jax.hod.detections import (
    HAND_SIDES,
    HAND_STATES,
    BBox,
    DetectionFormatError,
    FrameDetections,
    HandDetection,
    ObjectDetection,
    field_context,
)
from egovideo_jax.io.atomic import write_bytes_atomically
from egovideo_jax.io.safe_pickle import BYTES_GLOBALS, UnsafePickleError, load_restricted


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
        with field_context(f'hands[{index}]'):
            if proto.side not in range(len(HAND_SIDES)):
                raise ValueError(f'side: expected LEFT (0) or RIGHT (1), got {proto.side}')
            hands.append(HandDetection(box(proto.bbox), proto.score, proto.state,
                                       (proto.object_offset.x, proto.object_offset.y),
                                       HAND_SIDES[proto.side]))
    for index, proto in enumerate(message.objects):
        with field_context(f'objects[{index}]'):
            objects.append(ObjectDetection(box(proto.bbox), proto.score))
    return FrameDetections(message.frame_number, tuple(hands), tuple(objects))


def read_epic_pickle(path: str | os.PathLike) -> list[FrameDetections]:
    """The frames of one EPIC-KITCHENS-100 detection pickle, in file order."""
    try:
        payload = load_restricted(path, BYTES_GLOBALS, 'lists of bytes')
    except UnsafePickleError as error:
        raise DetectionFormatError(str(error)) from error
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
    write_bytes_atomically(os.fspath(path), pickle.dumps(messages, protocol=4))

