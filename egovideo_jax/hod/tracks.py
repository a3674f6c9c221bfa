"""Per-clip box tracks of the left hand, the right hand and the interacted object.

`build_tracks(frames, hand_threshold=0.5, object_threshold=0.5, smoothing=0) -> Tracks` takes
one `FrameDetections` (or None: no detections) per stored frame of the clip, in order:

- per frame, the highest-scoring hand of each side (scores >= hand_threshold) and the
  interacted object (scores >= object_threshold): when a picked hand touches a portable object
  (state 3), the object whose centre is nearest to that hand's centre + object_offset (the
  higher-scoring such hand when both do), else the highest-scoring object; a candidate whose
  centre is more than MAX_OBJECT_JUMP from where the track was last seen (or, for a holding
  hand, from the point its offset names) is rejected and the frame left as a gap: a missed
  detection of the real object must not make the track jump to a distractor;
- gaps between detections are filled by linear interpolation over the frame index, frames
  before the first / after the last detection hold that detection; filled frames are marked
  interpolated; a track never detected stays absent (zero boxes);
- `smoothing` (0 = off, else an odd window) replaces each box centre by the mean centre over a
  centred window (shrunk at the clip ends), keeping the box size, clipped to [0, 1];
- contact states follow the picked hands; a frame without its hand holds the state of the
  hand's previous detection (the first detection before it), and a hand never seen is 0.

`Tracks` (N frames; names as the HOD record schema uses them):
    boxes   {'left_hand', 'right_hand', 'object'}: float32 [N, 4] normalised xyxy
    valid   same names: int32 [N], ABSENT 0, DETECTED 1, INTERPOLATED 2
    contact {'left', 'right'}: int32 [N], 100DOH state 0..4
    .num_frames, .present(name), .centers(name) -> float32 [N, 2]
    .to_record_fields() -> {'boxes', 'box_valid', 'contact'} as `records.encode_clip` takes them
    Tracks.from_record_fields(clip) for a decoded record, Tracks.empty(num_frames)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from egovideo_jax.hod.detections import (
    DEFAULT_HAND_THRESHOLD,
    DEFAULT_OBJECT_THRESHOLD,
    HAND_SIDES,
    PORTABLE_OBJECT,
    BBox,
    FrameDetections,
    HandDetection,
    ObjectDetection,
)

TRACK_NAMES = ('left_hand', 'right_hand', 'object')
HAND_TRACKS = {'left': 'left_hand', 'right': 'right_hand'}
ABSENT, DETECTED, INTERPOLATED = 0, 1, 2


@dataclasses.dataclass
class Tracks:
    boxes: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    contact: dict[str, np.ndarray]

    def __post_init__(self):
        num_frames = len(self.valid.get(TRACK_NAMES[0], ()))
        self.boxes = _checked_arrays('boxes', self.boxes, TRACK_NAMES, (num_frames, 4),
                                     np.float32)
        self.valid = _checked_arrays('valid', self.valid, TRACK_NAMES, (num_frames,), np.int32)
        self.contact = _checked_arrays('contact', self.contact, HAND_SIDES, (num_frames,),
                                       np.int32)

    @property
    def num_frames(self) -> int:
        return len(self.valid[TRACK_NAMES[0]])

    def present(self, name: str) -> bool:
        """Whether the track was detected in at least one frame."""
        return bool((self.valid[name] != ABSENT).any())

    def centers(self, name: str) -> np.ndarray:
        boxes = self.boxes[name]
        return (boxes[:, :2] + boxes[:, 2:]) / 2

    def to_record_fields(self) -> dict:
        return {'boxes': dict(self.boxes), 'box_valid': dict(self.valid),
                'contact': dict(self.contact)}

    @classmethod
    def from_record_fields(cls, clip: Mapping) -> Tracks:
        return cls(dict(clip['boxes']), dict(clip['box_valid']), dict(clip['contact']))

    @classmethod
    def empty(cls, num_frames: int) -> Tracks:
        return cls({name: np.zeros((num_frames, 4)) for name in TRACK_NAMES},
                   {name: np.zeros(num_frames) for name in TRACK_NAMES},
                   {side: np.zeros(num_frames) for side in HAND_SIDES})


def _checked_arrays(field: str, arrays: Mapping, names: Sequence[str], shape: tuple,
                    dtype) -> dict[str, np.ndarray]:
    if set(arrays) != set(names):
        raise ValueError(f'Tracks.{field}: expected keys {list(names)}, got {list(arrays)}')
    checked = {name: np.asarray(arrays[name], dtype) for name in names}
    for name, array in checked.items():
        if array.shape != shape:
            raise ValueError(f'Tracks.{field}[{name!r}]: expected shape {shape}, '
                             f'got {array.shape}')
    return checked


# Largest plausible distance (normalised image units) between the interacted object's centre
# and where it is expected: the holding hand's offset point, or its last picked position.
MAX_OBJECT_JUMP = 0.15


def build_tracks(frames: Sequence[FrameDetections | None],
                 hand_threshold: float = DEFAULT_HAND_THRESHOLD,
                 object_threshold: float = DEFAULT_OBJECT_THRESHOLD,
                 smoothing: int = 0) -> Tracks:
    if smoothing < 0 or (smoothing and smoothing % 2 == 0):
        raise ValueError(f'smoothing: expected 0 (off) or an odd window size, got {smoothing}')
    num_frames = len(frames)
    picked_boxes: dict[str, list[BBox | None]] = {name: [None] * num_frames
                                                   for name in TRACK_NAMES}
    states: dict[str, list[int | None]] = {side: [None] * num_frames for side in HAND_SIDES}
    last_object_center = None
    for index, frame in enumerate(frames):
        if frame is None:
            continue
        frame = frame.filtered(hand_threshold, object_threshold)
        hands = _best_hand_per_side(frame.hands)
        for side, hand in hands.items():
            picked_boxes[HAND_TRACKS[side]][index] = hand.bbox
            states[side][index] = hand.state
        interacted = _interacted_object(hands, frame.objects, last_object_center)
        if interacted is not None:
            picked_boxes['object'][index] = interacted.bbox
            last_object_center = np.array(interacted.bbox.center)

    boxes, valid = {}, {}
    for name in TRACK_NAMES:
        boxes[name], valid[name] = _fill_gaps(picked_boxes[name])
        if smoothing > 1 and valid[name].any():
            boxes[name] = _smooth_centers(boxes[name], smoothing)
    contact = {side: _hold_states(states[side]) for side in HAND_SIDES}
    return Tracks(boxes, valid, contact)


def _best_hand_per_side(hands: Sequence[HandDetection]) -> dict[str, HandDetection]:
    best: dict[str, HandDetection] = {}
    for hand in hands:
        if hand.side not in best or hand.score > best[hand.side].score:
            best[hand.side] = hand
    return best


def _interacted_object(hands: Mapping[str, HandDetection],
                       objects: Sequence[ObjectDetection],
                       last_center: np.ndarray | None) -> ObjectDetection | None:
    if not objects:
        return None
    holders = [hand for hand in hands.values() if hand.state == PORTABLE_OBJECT]
    if holders:
        holder = max(holders, key=lambda hand: hand.score)
        hand_x, hand_y = holder.bbox.center
        anchor = np.array([hand_x + holder.object_offset[0], hand_y + holder.object_offset[1]])
        candidate = min(objects, key=lambda obj: _distance(obj, anchor))
    else:
        candidate = max(objects, key=lambda obj: obj.score)
        anchor = last_center
    if anchor is not None and _distance(candidate, anchor) > MAX_OBJECT_JUMP:
        return None
    return candidate


def _distance(obj: ObjectDetection, point: np.ndarray) -> float:
    return float(np.linalg.norm(np.array(obj.bbox.center) - point))


def _fill_gaps(boxes: Sequence[BBox | None]) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation between detections over the frame index, ends held."""
    detected = np.array([box is not None for box in boxes], bool)
    if not detected.any():
        return np.zeros((len(boxes), 4), np.float32), np.zeros(len(boxes), np.int32)
    known = np.flatnonzero(detected)
    values = np.array([boxes[index].as_list() for index in known], np.float64)
    frames = np.arange(len(boxes))
    # np.interp holds the first/last value outside the known range: exactly the end rule.
    filled = np.stack([np.interp(frames, known, values[:, k]) for k in range(4)], axis=1)
    return filled.astype(np.float32), np.where(detected, DETECTED, INTERPOLATED).astype(np.int32)


def _smooth_centers(boxes: np.ndarray, window: int) -> np.ndarray:
    centers = (boxes[:, :2] + boxes[:, 2:]).astype(np.float64) / 2
    half_sizes = (boxes[:, 2:] - boxes[:, :2]).astype(np.float64) / 2
    half = window // 2
    padded_sums = np.concatenate([np.zeros((1, 2)), np.cumsum(centers, axis=0)])
    frames = np.arange(len(boxes))
    lo, hi = np.maximum(frames - half, 0), np.minimum(frames + half + 1, len(boxes))
    smoothed = (padded_sums[hi] - padded_sums[lo]) / (hi - lo)[:, None]
    result = np.concatenate([smoothed - half_sizes, smoothed + half_sizes], axis=1)
    return np.clip(result, 0, 1).astype(np.float32)


def _hold_states(states: Sequence[int | None]) -> np.ndarray:
    """Each frame's state, or the previous detection's (the first one before any)."""
    seen = [state for state in states if state is not None]
    if not seen:
        return np.zeros(len(states), np.int32)
    current, held = seen[0], []
    for state in states:
        if state is not None:
            current = state
        held.append(current)
    return np.array(held, np.int32)
