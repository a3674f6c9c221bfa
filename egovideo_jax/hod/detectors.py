"""Live frame detectors behind one protocol; optional extras the core never imports.

`FrameDetector.detect(frames, frame_numbers=None) -> list[FrameDetections]`: `frames` uint8
[N, H, W, 3] RGB; one result per frame, numbered `frame_numbers[i]` (default i). Results can
be written with `jsonl_detections.write_jsonl` and read back through the `jsonl` source.
`FRAME_DETECTORS` / `make_frame_detector(name, **options)` name them for configs.

Each back-end imports its library when constructed and otherwise raises an ImportError that
says to `pip install -r requirements-hod-detectors.txt` in a separate environment
(mediapipe 0.10.21 needs numpy<2 and protobuf<5, which the core stack does not allow).

`MediapipeHandDetector(min_confidence=0.5, mirrored=False, box_margin=0.1, max_hands=2)`:
hands only, with the hand landmark model bundled in the mediapipe wheel (works offline;
`mediapipe.solutions.hands`, every frame on its own). The box is the landmarks' extent padded
by `box_margin` of its size on each side; the side comes from mediapipe's handedness, which
assumes a mirrored (selfie) image, so it is swapped unless `mirrored=True`. No contact
state (0) and no objects.

`OnnxHandObjectDetector(model_path, providers=None)`: a user-exported hand-object detector
(e.g. 100DOH) run with onnxruntime, one frame per call. The model must follow this layout:
    input 0    float32 [1, 3, H, W], RGB scaled to [0, 1]; frames are resized (bilinear) to
               H, W when the model fixes them, else passed at their own size
    outputs    'hands' and 'objects' when so named, else the first two outputs in that order;
               a leading batch dimension of 1 is optional
      hands    float32 [K, 9]: left, top, right, bottom (normalised to [0, 1]), score,
               contact state (0..4), object offset x, y (normalised), side (0 left, 1 right)
      objects  float32 [M, 5]: left, top, right, bottom, score
Boxes and scores are clipped to [0, 1] and states rounded (`decode_hand_object_outputs`).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from egovideo_jax.hod.detections import (
    HAND_SIDES,
    HAND_STATES,
    BBox,
    FrameDetections,
    HandDetection,
    ObjectDetection,
)

INSTALL_HINT = ('pip install -r requirements-hod-detectors.txt, in an environment of its own: '
                'mediapipe==0.10.21 needs numpy<2 and protobuf<5, which the core stack does '
                'not allow')
HAND_COLUMNS = 9
OBJECT_COLUMNS = 5


@runtime_checkable
class FrameDetector(Protocol):
    def detect(self, frames: np.ndarray,
               frame_numbers: Sequence[int] | None = None) -> list[FrameDetections]:
        ...


def _import_optional(module: str, user: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'{user} needs the optional package {module!r}, which is not '
                          f'installed: {INSTALL_HINT}') from error


def _checked_frames(frames, frame_numbers) -> tuple[np.ndarray, list[int]]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f'frames: expected uint8 [N, H, W, 3] RGB, got {frames.dtype} '
                         f'{frames.shape}')
    numbers = list(range(len(frames))) if frame_numbers is None else list(frame_numbers)
    if len(numbers) != len(frames):
        raise ValueError(f'frame_numbers: expected {len(frames)} numbers, got {len(numbers)}')
    return frames, numbers


# ----------------------------------------------------------------------------- mediapipe

def hand_from_landmarks(points: np.ndarray, handedness: str, score: float, mirrored: bool,
                        box_margin: float) -> HandDetection:
    """A hand from normalised landmarks [21, 2] (x, y) and mediapipe's 'Left'/'Right' label."""
    points = np.clip(np.asarray(points, np.float64), 0, 1)
    low, high = points.min(axis=0), points.max(axis=0)
    pad = box_margin * (high - low)
    left, top = np.clip(low - pad, 0, 1)
    right, bottom = np.clip(high + pad, 0, 1)
    side = handedness.lower()
    if side not in HAND_SIDES:
        raise ValueError(f'handedness: expected "Left" or "Right", got {handedness!r}')
    if not mirrored:  # mediapipe labels hands as if the image were a mirrored selfie
        side = HAND_SIDES[1 - HAND_SIDES.index(side)]
    return HandDetection(BBox(left, top, right, bottom), float(np.clip(score, 0, 1)), 0,
                         (0.0, 0.0), side)


class MediapipeHandDetector:
    def __init__(self, min_confidence: float = 0.5, mirrored: bool = False,
                 box_margin: float = 0.1, max_hands: int = 2):
        mediapipe = _import_optional('mediapipe', 'MediapipeHandDetector')
        self._hands = mediapipe.solutions.hands.Hands(
            static_image_mode=True, max_num_hands=max_hands,
            min_detection_confidence=min_confidence)
        self.mirrored = mirrored
        self.box_margin = box_margin

    def detect(self, frames: np.ndarray,
               frame_numbers: Sequence[int] | None = None) -> list[FrameDetections]:
        frames, numbers = _checked_frames(frames, frame_numbers)
        results = []
        for frame, number in zip(frames, numbers):
            output = self._hands.process(np.ascontiguousarray(frame))
            hands = []
            for landmarks, handedness in zip(output.multi_hand_landmarks or (),
                                             output.multi_handedness or ()):
                label = handedness.classification[0]
                points = np.array([(point.x, point.y) for point in landmarks.landmark])
                hands.append(hand_from_landmarks(points, label.label, label.score,
                                                 self.mirrored, self.box_margin))
            results.append(FrameDetections(number, tuple(hands), ()))
        return results

    def close(self) -> None:
        self._hands.close()


# ----------------------------------------------------------------------------- ONNX

def decode_hand_object_outputs(hands: np.ndarray, objects: np.ndarray,
                               frame_number: int) -> FrameDetections:
    """One frame's detections from the ONNX output layout of the module docstring."""
    def rows(array, name, columns):
        array = np.asarray(array, np.float64)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2 or array.shape[1] != columns:
            raise ValueError(f'ONNX output {name!r}: expected [count, {columns}], got '
                             f'{array.shape}')
        return array

    def box(row):
        left, top, right, bottom = np.clip(row[:4], 0, 1)
        return BBox(min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    hand_rows = rows(hands, 'hands', HAND_COLUMNS)
    object_rows = rows(objects, 'objects', OBJECT_COLUMNS)
    return FrameDetections(
        frame_number,
        tuple(HandDetection(box(row), float(np.clip(row[4], 0, 1)),
                            int(np.clip(np.rint(row[5]), 0, len(HAND_STATES) - 1)),
                            (float(row[6]), float(row[7])), HAND_SIDES[int(row[8] >= 0.5)])
              for row in hand_rows),
        tuple(ObjectDetection(box(row), float(np.clip(row[4], 0, 1))) for row in object_rows))


class OnnxHandObjectDetector:
    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] | None = None):
        onnxruntime = _import_optional('onnxruntime', 'OnnxHandObjectDetector')
        self._session = onnxruntime.InferenceSession(
            os.fspath(model_path), providers=list(providers or
                                                  onnxruntime.get_available_providers()))
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        height, width = model_input.shape[2:4]
        self._input_size = ((width, height) if isinstance(height, int) and isinstance(width, int)
                            else None)
        names = [output.name for output in self._session.get_outputs()]
        if len(names) < 2:
            raise ValueError(f'{model_path}: expected outputs "hands" and "objects", got {names}')
        self._output_names = ['hands', 'objects'] if {'hands', 'objects'} <= set(names) else (
            names[:2])

    def detect(self, frames: np.ndarray,
               frame_numbers: Sequence[int] | None = None) -> list[FrameDetections]:
        frames, numbers = _checked_frames(frames, frame_numbers)
        results = []
        for frame, number in zip(frames, numbers):
            if self._input_size is not None:
                frame = np.asarray(Image.fromarray(frame).resize(
                    self._input_size, Image.Resampling.BILINEAR))
            blob = (frame.astype(np.float32) / 255).transpose(2, 0, 1)[None]
            hands, objects = self._session.run(self._output_names, {self._input_name: blob})
            results.append(decode_hand_object_outputs(hands, objects, number))
        return results


FRAME_DETECTORS = {
    'mediapipe': MediapipeHandDetector,
    'onnx': OnnxHandObjectDetector,
}


def make_frame_detector(name: str, **options) -> FrameDetector:
    if name not in FRAME_DETECTORS:
        raise ValueError(f'unknown frame detector {name!r}; expected one of '
                         f'{sorted(FRAME_DETECTORS)}')
    return FRAME_DETECTORS[name](**options)
