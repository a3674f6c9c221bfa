"""HOD detections: data classes, the EPIC proto schema and pickles, JSONL, sources, and the
optional live detectors (skipped when their packages are absent)."""
import json
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from egovideo_jax.hod import detection_sources as sources
from egovideo_jax.hod import detectors
from egovideo_jax.hod import epic_detections as epic
from egovideo_jax.hod import jsonl_detections as jsonl
from egovideo_jax.hod.detections import (
    BBox,
    DetectionFormatError,
    FrameDetections,
    HandDetection,
    ObjectDetection,
)


def hand(left, top, right, bottom, score=0.75, state=3, offset=(0.125, -0.25), side='right'):
    return HandDetection(BBox(left, top, right, bottom), score, state, offset, side)


def obj(left, top, right, bottom, score=0.875):
    return ObjectDetection(BBox(left, top, right, bottom), score)


# Dyadic values survive float32 storage exactly, so round trips compare with ==.
FRAMES = [
    FrameDetections(1, (hand(0.5, 0.25, 0.75, 0.5),
                        hand(0.0, 0.5, 0.25, 1.0, score=0.625, state=0, offset=(0, 0),
                             side='left')),
                    (obj(0.625, 0.0, 0.875, 0.25),)),
    FrameDetections(2, (), ()),
    FrameDetections(3, (hand(0.5, 0.5, 0.625, 0.75, score=0.25, state=4, side='left'),),
                    (obj(0.0, 0.0, 1.0, 1.0, score=0.375), obj(0.25, 0.25, 0.5, 0.5))),
]


# ----------------------------------------------------------------------------- data classes

def test_bbox_center_and_validation():
    assert BBox(0.25, 0.5, 0.75, 1.0).center == (0.5, 0.75)
    with pytest.raises(ValueError, match='bbox.right'):
        BBox(0.0, 0.0, 1.5, 1.0)
    with pytest.raises(ValueError, match='left <= right'):
        BBox(0.5, 0.0, 0.25, 1.0)
    with pytest.raises(ValueError, match='bbox.top'):
        BBox(0.0, float('nan'), 0.5, 1.0)


def test_hand_detection_validation_names_the_field():
    with pytest.raises(ValueError, match='side'):
        hand(0, 0, 1, 1, side='middle')
    with pytest.raises(ValueError, match='state'):
        hand(0, 0, 1, 1, state=5)
    with pytest.raises(ValueError, match='score'):
        hand(0, 0, 1, 1, score=1.5)
    with pytest.raises(ValueError, match='object_offset'):
        hand(0, 0, 1, 1, offset=(0.1,))


def test_numpy_scalars_become_plain_python_numbers():
    detection = HandDetection(BBox(*np.float32([0.25, 0.25, 0.5, 0.5])), np.float32(0.5),
                              np.int64(3), np.float32([0.125, 0.0]), 'left')
    assert type(detection.bbox.left) is float and type(detection.state) is int
    json.dumps(jsonl.frame_to_dict('v', FrameDetections(np.int64(4), (detection,))))


def test_filtered_applies_thresholds():
    frame = FRAMES[2].filtered(hand_threshold=0.5, object_threshold=0.5)
    assert frame.hands == () and frame.objects == (FRAMES[2].objects[1],)


# ----------------------------------------------------------------------------- proto schema

def test_proto_schema_matches_the_epic_release():
    def fields(descriptor):
        return [(field.name, field.number, field.type) for field in descriptor.fields]

    descriptor = epic.DetectionsProto.DESCRIPTOR
    kind = descriptor.fields_by_name['video_id']  # FieldDescriptor type constants
    hand_type = descriptor.fields_by_name['hands'].message_type
    object_type = descriptor.fields_by_name['objects'].message_type
    bbox_type = hand_type.fields_by_name['bbox'].message_type
    assert descriptor.full_name == 'model.detections.Detections'
    assert fields(descriptor) == [('video_id', 1, kind.TYPE_STRING),
                                  ('frame_number', 2, kind.TYPE_INT32),
                                  ('hands', 3, kind.TYPE_MESSAGE),
                                  ('objects', 4, kind.TYPE_MESSAGE)]
    assert fields(hand_type) == [('bbox', 1, kind.TYPE_MESSAGE), ('score', 2, kind.TYPE_FLOAT),
                                 ('state', 3, kind.TYPE_ENUM),
                                 ('object_offset', 4, kind.TYPE_MESSAGE),
                                 ('side', 5, kind.TYPE_ENUM)]
    assert fields(object_type) == [('bbox', 1, kind.TYPE_MESSAGE), ('score', 2, kind.TYPE_FLOAT)]
    assert fields(bbox_type) == [(name, number, kind.TYPE_FLOAT) for number, name in
                                 enumerate(('left', 'top', 'right', 'bottom'), start=1)]
    assert hand_type.fields_by_name['object_offset'].message_type.full_name == (
        'model.detections.FloatVector')
    assert [v.name for v in hand_type.enum_types_by_name['HandState'].values] == [
        'NO_CONTACT', 'SELF_CONTACT', 'ANOTHER_PERSON', 'PORTABLE_OBJECT', 'STATIONARY_OBJECT']
    assert [(v.name, v.number) for v in hand_type.enum_types_by_name['HandSide'].values] == [
        ('LEFT', 0), ('RIGHT', 1)]


def _tag(field, wire_type):
    return bytes([field << 3 | wire_type])


def _floats(*pairs):
    return b''.join(_tag(field, 5) + struct.pack('<f', value) for field, value in pairs)


def _nested(field, payload):
    return _tag(field, 2) + bytes([len(payload)]) + payload


def test_wire_format_matches_a_hand_encoded_message():
    """Bytes written from the proto3 wire rules, independent of our schema code."""
    bbox = _floats((1, 0.5), (2, 0.25), (3, 0.75), (4, 0.5))
    hand_bytes = (_nested(1, bbox) + _floats((2, 0.75)) + _tag(3, 0) + b'\x03'
                  + _nested(4, _floats((1, 0.125), (2, -0.25))) + _tag(5, 0) + b'\x01')
    object_bytes = _nested(1, _floats((1, 0.625), (3, 0.875), (4, 0.25))) + _floats((2, 0.875))
    expected = (_nested(1, b'P01_01') + _tag(2, 0) + b'\x07'
                + _nested(3, hand_bytes) + _nested(4, object_bytes))
    frame = FrameDetections(7, (hand(0.5, 0.25, 0.75, 0.5),), (obj(0.625, 0.0, 0.875, 0.25),))
    assert epic.frame_to_proto('P01_01', frame).SerializeToString() == expected
    assert epic.frame_from_proto(epic.DetectionsProto.FromString(expected)) == frame


# ----------------------------------------------------------------------------- EPIC pickles

def test_epic_pickle_round_trip(tmp_path):
    path = tmp_path / 'P01_01.pkl'
    epic.write_epic_pickle(path, 'P01_01', FRAMES)
    assert epic.read_epic_pickle(path) == FRAMES
    messages = pickle.loads(path.read_bytes())  # the file is a plain list of bytes
    assert epic.DetectionsProto.FromString(messages[0]).video_id == 'P01_01'


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_epic_pickle_reads_every_protocol(tmp_path, protocol):
    path = tmp_path / 'v.pkl'
    path.write_bytes(pickle.dumps(
        [epic.frame_to_proto('v', frame).SerializeToString() for frame in FRAMES],
        protocol=protocol))
    assert epic.read_epic_pickle(path) == FRAMES


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps([_RunsCode(marker)]))
    with pytest.raises(DetectionFormatError, match=r'evil\.pkl: refusing to unpickle \w+\.system'):
        epic.read_epic_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize('payload, message', [
    ({'frames': []}, 'expected a pickled list of bytes, got dict'),
    ([b'', 'text'], 'item 1: expected bytes, got str'),
    ([b'\xff\xff\xff'], 'item 0'),
])
def test_malformed_pickles_name_file_and_item(tmp_path, payload, message):
    path = tmp_path / 'bad.pkl'
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DetectionFormatError, match='bad.pkl') as error:
        epic.read_epic_pickle(path)
    assert message in str(error.value)


def test_out_of_range_proto_values_name_the_field(tmp_path):
    message = epic.frame_to_proto('v', FRAMES[0])
    message.hands[1].bbox.right = 2.0
    path = tmp_path / 'v.pkl'
    path.write_bytes(pickle.dumps([message.SerializeToString()]))
    with pytest.raises(DetectionFormatError, match=r'v\.pkl: item 0: hands\[1\]: bbox\.right'):
        epic.read_epic_pickle(path)


# ----------------------------------------------------------------------------- JSONL

def test_jsonl_round_trip_and_documented_layout(tmp_path):
    path = tmp_path / 'v.jsonl'
    jsonl.write_jsonl(path, 'v', FRAMES)
    assert jsonl.read_jsonl(path) == FRAMES
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        'video_id': 'v', 'frame_number': 1,
        'hands': [{'bbox': [0.5, 0.25, 0.75, 0.5], 'score': 0.75, 'state': 3,
                   'object_offset': [0.125, -0.25], 'side': 'right'},
                  {'bbox': [0.0, 0.5, 0.25, 1.0], 'score': 0.625, 'state': 0,
                   'object_offset': [0.0, 0.0], 'side': 'left'}],
        'objects': [{'bbox': [0.625, 0.0, 0.875, 0.25], 'score': 0.875}]}


@pytest.mark.parametrize('edit, message', [
    (lambda record: record['hands'][0].update(side='up'), r'hands\[0\]: side'),
    (lambda record: record['objects'][0].pop('score'), r'objects\[0\]: score: missing'),
    (lambda record: record.update(frame_number='2'), 'frame_number: expected an integer'),
    (lambda record: record['hands'][0].update(bbox=[0, 0, 1]), r'hands\[0\]: bbox'),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, edit, message):
    lines = [jsonl.frame_to_dict('v', frame) for frame in FRAMES]
    edit(lines[0])
    path = tmp_path / 'v.jsonl'
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n\n')
    with pytest.raises(DetectionFormatError, match=rf'v\.jsonl:1: {message}'):
        jsonl.read_jsonl(path)


def test_jsonl_rejects_invalid_json_with_line_number(tmp_path):
    path = tmp_path / 'v.jsonl'
    path.write_text(json.dumps(jsonl.frame_to_dict('v', FRAMES[0])) + '\n{not json\n')
    with pytest.raises(DetectionFormatError, match=r'v\.jsonl:2'):
        jsonl.read_jsonl(path)


# ----------------------------------------------------------------------------- sources

@pytest.mark.parametrize('name, writer', [('epic', epic.write_epic_pickle),
                                          ('jsonl', jsonl.write_jsonl)])
def test_sources_return_requested_frames_with_thresholds(tmp_path, name, writer):
    suffix = sources.DETECTION_SOURCES[name].suffix
    writer(tmp_path / f'P01_01{suffix}', 'P01_01', FRAMES)
    source = sources.make_detection_source(name, tmp_path)
    frames = source.frames('P01_01', [1, 3, 99])
    assert sorted(frames) == [1, 3]  # frame 99 is not in the file
    assert frames[1] == FRAMES[0]
    assert frames[3].hands == () and frames[3].objects == (FRAMES[2].objects[1],)
    lenient = sources.make_detection_source(name, tmp_path, hand_threshold=0.2,
                                        object_threshold=0.2)
    assert lenient.frames('P01_01', [3])[3] == FRAMES[2]


def test_source_errors(tmp_path):
    source = sources.EpicSource(tmp_path)
    with pytest.raises(FileNotFoundError, match='P99_99'):
        source.frames('P99_99', [1])
    with pytest.raises(ValueError, match='not a plain file name'):
        source.frames('../etc/passwd', [1])
    jsonl.write_jsonl(tmp_path / 'dup.jsonl', 'dup', [FRAMES[0], FRAMES[0]])
    with pytest.raises(DetectionFormatError, match='frame_number 1 appears more than once'):
        sources.JsonlSource(tmp_path).frames('dup', [1])
    with pytest.raises(ValueError, match="unknown detection source 'nope'"):
        sources.make_detection_source('nope', tmp_path)


def test_source_caches_recent_videos(tmp_path):
    jsonl.write_jsonl(tmp_path / 'v.jsonl', 'v', FRAMES)
    source = sources.JsonlSource(tmp_path)
    assert source.frames('v', [1])
    (tmp_path / 'v.jsonl').unlink()
    assert source.frames('v', [2]) == {2: FRAMES[1]}


# ----------------------------------------------------------------------------- live detectors

@pytest.mark.parametrize('module, factory', [
    ('mediapipe', lambda: detectors.MediapipeHandDetector()),
    ('onnxruntime', lambda: detectors.OnnxHandObjectDetector('model.onnx')),
])
def test_missing_backend_raises_install_hint(monkeypatch, module, factory):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail even if installed
    with pytest.raises(ImportError, match='requirements-hod-detectors.txt') as error:
        factory()
    assert module in str(error.value) and 'own' in str(error.value)


def test_hand_from_landmarks_box_and_side():
    points = np.array([[0.2, 0.3], [0.4, 0.5], [0.3, 0.9]])
    mirrored = detectors.hand_from_landmarks(points, 'Left', 0.9, mirrored=True, box_margin=0.1)
    assert mirrored.side == 'left'
    np.testing.assert_allclose(mirrored.bbox.as_list(), [0.18, 0.24, 0.42, 0.96])
    egocentric = detectors.hand_from_landmarks(points, 'Left', 0.9, mirrored=False,
                                               box_margin=0.5)
    assert egocentric.side == 'right' and egocentric.state == 0
    np.testing.assert_allclose(egocentric.bbox.as_list(), [0.1, 0.0, 0.5, 1.0])  # clipped


def test_decode_hand_object_outputs():
    hands = np.array([[[0.1, 0.2, 0.3, 0.4, 0.9, 2.6, 0.05, -0.1, 1.0],
                       [0.5, 0.5, 1.2, 0.7, 1.3, -1.0, 0.0, 0.0, 0.2]]], np.float32)
    objects = np.array([[0.3, 0.3, 0.2, 0.5, 0.8]], np.float32)
    frame = detectors.decode_hand_object_outputs(hands, objects, frame_number=12)
    assert frame.frame_number == 12
    first, second = frame.hands
    assert (first.side, first.state) == ('right', 3)
    assert first.object_offset == pytest.approx((0.05, -0.1))
    assert (second.side, second.state, second.score) == ('left', 0, 1.0)
    assert second.bbox.right == 1.0
    assert frame.objects[0].bbox.as_list() == pytest.approx([0.2, 0.3, 0.3, 0.5])
    with pytest.raises(ValueError, match="ONNX output 'objects'"):
        detectors.decode_hand_object_outputs(hands, np.zeros((1, 4)), 0)


def test_frame_detector_registry_and_frame_checks():
    assert set(detectors.FRAME_DETECTORS) == {'mediapipe', 'onnx'}
    with pytest.raises(ValueError, match='unknown frame detector'):
        detectors.make_frame_detector('yolo')
    with pytest.raises(ValueError, match='uint8'):
        detectors._checked_frames(np.zeros((2, 8, 8, 3), np.float32), None)


def test_mediapipe_detector_on_a_blank_frame():
    pytest.importorskip('mediapipe')
    detector = detectors.MediapipeHandDetector()
    assert isinstance(detector, detectors.FrameDetector)
    results = detector.detect(np.zeros((2, 64, 64, 3), np.uint8), frame_numbers=[5, 6])
    assert [frame.frame_number for frame in results] == [5, 6]
    assert all(frame.hands == () and frame.objects == () for frame in results)


def test_onnx_detector_with_a_constant_model(tmp_path):
    pytest.importorskip('onnxruntime')
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper
    hands = np.array([[0.1, 0.2, 0.3, 0.4, 0.9, 3, 0.1, 0.0, 1]], np.float32)
    objects = np.array([[0.3, 0.2, 0.5, 0.4, 0.8]], np.float32)
    graph = helper.make_graph(
        [helper.make_node('Constant', [], ['hands'], value=helper.make_tensor(
            'h', TensorProto.FLOAT, hands.shape, hands.ravel())),
         helper.make_node('Constant', [], ['objects'], value=helper.make_tensor(
             'o', TensorProto.FLOAT, objects.shape, objects.ravel()))],
        'constant', [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info('hands', TensorProto.FLOAT, hands.shape),
         helper.make_tensor_value_info('objects', TensorProto.FLOAT, objects.shape)])
    path = tmp_path / 'model.onnx'
    onnx.save(helper.make_model(graph), path)
    detector = detectors.OnnxHandObjectDetector(path, providers=['CPUExecutionProvider'])
    (frame,) = detector.detect(np.zeros((1, 48, 64, 3), np.uint8))
    assert frame.hands[0].side == 'right' and frame.hands[0].state == 3
    assert frame.objects[0].score == pytest.approx(0.8)
