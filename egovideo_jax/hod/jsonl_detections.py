"""Our JSONL detection files, for any external detector: UTF-8, one JSON object per frame
and line (blank lines ignored), with the fields of `detections.FrameDetections`:

    {"video_id": "P01_01", "frame_number": 1,
     "hands": [{"bbox": [left, top, right, bottom], "score": 0.98, "state": 3,
                "object_offset": [x, y], "side": "right"}],
     "objects": [{"bbox": [left, top, right, bottom], "score": 0.87}]}

Malformed files raise `DetectionFormatError` naming the file, the line and the field.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable

from egovideo_jax.hod.detections import (
    BBox,
    DetectionFormatError,
    FrameDetections,
    HandDetection,
    ObjectDetection,
    field_context,
)
from egovideo_jax.io.atomic import write_bytes_atomically


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
        with field_context(f'hands[{index}]'):
            hands.append(HandDetection(box(hand), get(hand, 'score', (int, float)),
                                       get(hand, 'state', int),
                                       tuple(get(hand, 'object_offset', list)),
                                       get(hand, 'side', str)))
    objects = []
    for index, obj in enumerate(get(record, 'objects', list)):
        with field_context(f'objects[{index}]'):
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
    write_bytes_atomically(os.fspath(path), buffer.getvalue().encode('utf-8'))

