"""Motion facts of a clip's tracks: what each hand and the object did, in words a prompt or
a template can use.

`motion_facts(tracks, frame_times) -> MotionFacts`. Positions are box centres in normalised
image coordinates (x grows to the right, y grows DOWNWARD, so "up" is negative dy). Times are
seconds from the clip's first frame.

Per track (`TrackFacts`, for 'left_hand', 'right_hand', 'object'):
    present        detected in at least one frame (all other fields are neutral when not)
    start, end     centre (x, y) at the first and last frame
    displacement   end - start; `distance` its length; `direction` its compass word, one of
                   DIRECTIONS ('right', 'up-right', 'up', ..., 'down-right': 45-degree
                   sectors) or 'still' when the distance is below STILL_DISTANCE
    path_length    summed frame-to-frame centre steps
    phases         1..MAX_PHASES pieces of the path, cut where it turns most: the greedy
                   Ramer-Douglas-Peucker split (cut the piece at the point farthest from the
                   segment joining its ends while that point is more than PHASE_TOLERANCE
                   away), then neighbours with the same direction merged. Chosen over fixed
                   thirds because the cut lands on the actual turn ("up, then left")
                   whatever its timing.
    reversals      turn-backs along the main axis of motion (principal axis of the centres)
                   of at least REVERSAL_DISTANCE
    oscillation    'shakes' (>= SHAKE_MIN_REVERSALS reversals, net distance under half the
                   extent along the axis), 'back_and_forth' (1-2 reversals, the same small net
                   distance, and no grasp/release in between: reach-then-lift is not one),
                   or None; `axis` 'horizontal' | 'vertical' | 'diagonal' (the main axis)
    moved          any non-still direction, phase or oscillation

Clip-level:
    contact_events   `ContactEvent(hand, kind, frame, time, before, after)`: 'grasp' when a
                     hand's contact state becomes 3 (portable object) from anything else,
                     'release' when it leaves 3; states lasting under CONTACT_MIN_FRAMES
                     frames are treated as detector flicker. `before`/`after`: the direction
                     the hand moved from the previous event (or the clip start) to this one and
                     from this one to the next (or the clip end).
    object_relations {hand side: ObjectRelation(hand, start, end)} where the object is seen
                     from that hand at the first/last frame: RELATIONS words 'above', 'below',
                     'left', 'right', 'above-left', ... or 'at' (within RELATION_DEAD_ZONE).
    held_frames      {side: frames in state 3 (after the flicker filter)}
    holding_hand     the side with most such frames (ties: 'right'), None if neither.
    duration, clip_times (frame times minus the first).
`MotionFacts.to_dict()` is JSON-serialisable (floats rounded to 4 decimals).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from egovideo_jax.hod.detections import HAND_SIDES, PORTABLE_OBJECT
from egovideo_jax.hod.tracks import HAND_TRACKS, TRACK_NAMES, Tracks

STILL_DISTANCE = 0.05  # normalised units (a twentieth of the frame)
PHASE_TOLERANCE = 0.04
MAX_PHASES = 4
REVERSAL_DISTANCE = 0.03
SHAKE_MIN_REVERSALS = 3
RELATION_DEAD_ZONE = 0.05
CONTACT_MIN_FRAMES = 2
DIRECTIONS = ('right', 'up-right', 'up', 'up-left', 'left', 'down-left', 'down', 'down-right')
STILL = 'still'


@dataclasses.dataclass(frozen=True)
class Phase:
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    displacement: tuple[float, float]
    direction: str


@dataclasses.dataclass(frozen=True)
class TrackFacts:
    name: str
    present: bool
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    displacement: tuple[float, float] = (0.0, 0.0)
    distance: float = 0.0
    direction: str = STILL
    path_length: float = 0.0
    phases: tuple[Phase, ...] = ()
    reversals: int = 0
    oscillation: str | None = None
    axis: str | None = None
    moved: bool = False


@dataclasses.dataclass(frozen=True)
class ContactEvent:
    hand: str
    kind: str
    frame: int
    time: float
    before: str
    after: str


@dataclasses.dataclass(frozen=True)
class ObjectRelation:
    hand: str
    start: str
    end: str


@dataclasses.dataclass(frozen=True)
class MotionFacts:
    duration: float
    clip_times: tuple[float, ...]
    tracks: dict[str, TrackFacts]
    contact_events: tuple[ContactEvent, ...]
    object_relations: dict[str, ObjectRelation]
    held_frames: dict[str, int]
    holding_hand: str | None

    def hand(self, side: str) -> TrackFacts:
        return self.tracks[HAND_TRACKS[side]]

    def events_of(self, side: str) -> tuple[ContactEvent, ...]:
        return tuple(event for event in self.contact_events if event.hand == side)

    def active(self, side: str) -> bool:
        """The hand moved, held the object or grasped/released something."""
        return (self.hand(side).moved or self.held_frames[side] > 0
                or bool(self.events_of(side)))

    def to_dict(self) -> dict:
        return _rounded(dataclasses.asdict(self))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def direction_word(dx: float, dy: float) -> str:
    """The compass word of an image-space displacement (y down), or 'still'."""
    if math.hypot(dx, dy) < STILL_DISTANCE:
        return STILL
    angle = math.degrees(math.atan2(-dy, dx)) % 360  # counter-clockwise from +x, y flipped up
    return DIRECTIONS[int(((angle + 22.5) % 360) // 45)]


def direction_phrase(direction: str) -> str:
    """English for a direction word: 'up-left' -> 'up and to the left', 'still' -> 'still'."""
    return ' and '.join(_SIDEWAYS.get(word, word) for word in direction.split('-'))


def relation_phrase(relation: str) -> str:
    """English for a relation word, ending in a preposition: 'above-right' -> 'above and to
    the right of', 'at' -> 'at'."""
    return ' and '.join(f'{_SIDEWAYS[word]} of' if word in _SIDEWAYS else word
                        for word in relation.split('-'))


_SIDEWAYS = {'left': 'to the left', 'right': 'to the right'}


def relation_word(dx: float, dy: float) -> str:
    """Where a point at offset (dx, dy) lies from a reference point: 'above-left', 'at', ..."""
    vertical = 'above' if dy < -RELATION_DEAD_ZONE else 'below' if dy > RELATION_DEAD_ZONE else ''
    horizontal = ('left' if dx < -RELATION_DEAD_ZONE else
                  'right' if dx > RELATION_DEAD_ZONE else '')
    return '-'.join(word for word in (vertical, horizontal) if word) or 'at'


def motion_facts(tracks: Tracks, frame_times: Sequence[float]) -> MotionFacts:
    times = np.asarray(frame_times, np.float64)
    if times.shape != (tracks.num_frames,):
        raise ValueError(f'frame_times: expected {tracks.num_frames} times (one per frame), '
                         f'got shape {times.shape}')
    if tracks.num_frames == 0:
        raise ValueError('tracks: a clip needs at least one frame')
    clip_times = times - times[0]
    contact = {side: _debounced(tracks.contact[side]) for side in HAND_SIDES}
    events = _contact_events(tracks, contact, clip_times)
    held_frames = {side: int((contact[side] == PORTABLE_OBJECT).sum()) for side in HAND_SIDES}
    track_facts = {}
    for name in TRACK_NAMES:
        own_events = [event for event in events if HAND_TRACKS[event.hand] == name or
                      name == 'object']
        track_facts[name] = _track_facts(name, tracks, clip_times, bool(own_events))
    return MotionFacts(
        duration=float(clip_times[-1]),
        clip_times=tuple(float(t) for t in clip_times),
        tracks=track_facts,
        contact_events=tuple(events),
        object_relations=_object_relations(tracks),
        held_frames=held_frames,
        holding_hand=_holding_hand(held_frames))


def _track_facts(name: str, tracks: Tracks, clip_times: np.ndarray,
                 has_contact_events: bool) -> TrackFacts:
    if not tracks.present(name):
        return TrackFacts(name, present=False)
    points = tracks.centers(name).astype(np.float64)
    displacement = points[-1] - points[0]
    distance = float(np.hypot(*displacement))
    direction = direction_word(*displacement)
    phases = _phases(points, clip_times)
    reversals, extent, axis = _reversals(points)
    oscillation = None
    if extent > 0 and distance < extent / 2:
        if reversals >= SHAKE_MIN_REVERSALS:
            oscillation = 'shakes'
        elif reversals >= 1 and not has_contact_events:
            oscillation = 'back_and_forth'
    moved = (direction != STILL or oscillation is not None
             or any(phase.direction != STILL for phase in phases))
    return TrackFacts(
        name, present=True, start=_pair(points[0]), end=_pair(points[-1]),
        displacement=_pair(displacement), distance=distance, direction=direction,
        path_length=float(np.hypot(*np.diff(points, axis=0).T).sum()), phases=phases,
        reversals=reversals, oscillation=oscillation, axis=axis if reversals else None,
        moved=moved)


def _pair(values) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def _phases(points: np.ndarray, clip_times: np.ndarray) -> tuple[Phase, ...]:
    bounds = [0, len(points) - 1]
    while len(bounds) - 1 < MAX_PHASES:
        farthest = max(((_farthest_from_chord(points, a, b), a) for a, b in zip(bounds, bounds[1:])
                        if b - a >= 2), default=None)
        if farthest is None or farthest[0][0] <= PHASE_TOLERANCE:
            break
        bounds = sorted(bounds + [farthest[0][1]])
    merged = [bounds[0]]
    for bound, next_bound in zip(bounds[1:], bounds[2:] + [None]):
        if next_bound is not None and (
                _direction_between(points, merged[-1], bound)
                == _direction_between(points, bound, next_bound)):
            continue  # same way on both sides: not a turn
        merged.append(bound)
    return tuple(
        Phase(a, b, float(clip_times[a]), float(clip_times[b]), _pair(points[b] - points[a]),
              _direction_between(points, a, b))
        for a, b in zip(merged, merged[1:]))


def _direction_between(points: np.ndarray, a: int, b: int) -> str:
    return direction_word(*(points[b] - points[a]))


def _farthest_from_chord(points: np.ndarray, a: int, b: int) -> tuple[float, int]:
    """(distance, index) of the point strictly between a and b farthest from the segment a-b
    (the segment, not its line, so a turn-back along the line counts too)."""
    inner = points[a + 1:b] - points[a]
    chord = points[b] - points[a]
    squared_length = float(chord @ chord)
    along = np.clip(inner @ chord / squared_length, 0, 1) if squared_length > 1e-12 else (
        np.zeros(len(inner)))
    distances = np.hypot(*(inner - along[:, None] * chord).T)
    k = int(np.argmax(distances))
    return float(distances[k]), a + 1 + k


def _reversals(points: np.ndarray) -> tuple[int, float, str]:
    """(turn-backs, extent, axis name) along the principal axis of the centres."""
    centred = points - points.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    signal = centred @ axis
    reversals, trend, extreme = 0, 0, signal[0]
    low = high = signal[0]
    for value in signal[1:]:
        if trend == 0:  # no direction yet: wait for a move of REVERSAL_DISTANCE either way
            low, high = min(low, value), max(high, value)
            if value - low >= REVERSAL_DISTANCE or high - value >= REVERSAL_DISTANCE:
                trend, extreme = (1 if value - low >= REVERSAL_DISTANCE else -1), value
        elif (value - extreme) * trend > 0:
            extreme = value
        elif abs(value - extreme) >= REVERSAL_DISTANCE:
            reversals, trend, extreme = reversals + 1, -trend, value
    angle = math.degrees(math.atan2(abs(axis[1]), abs(axis[0])))
    axis_name = 'horizontal' if angle < 30 else 'vertical' if angle > 60 else 'diagonal'
    return reversals, float(signal.max() - signal.min()), axis_name


def _debounced(states: np.ndarray) -> np.ndarray:
    """States with runs shorter than CONTACT_MIN_FRAMES (after the first) set to the
    preceding run's state."""
    result = np.array(states, np.int32)
    start = 0
    while start < len(result):
        end = start
        while end < len(result) and result[end] == result[start]:
            end += 1
        if start > 0 and end - start < CONTACT_MIN_FRAMES:
            result[start:end] = result[start - 1]
        start = end
    return result


def _contact_events(tracks: Tracks, contact: dict[str, np.ndarray],
                    clip_times: np.ndarray) -> list[ContactEvent]:
    events = []
    for side in HAND_SIDES:
        holding = contact[side] == PORTABLE_OBJECT
        changes = np.flatnonzero(holding[1:] != holding[:-1]) + 1
        points = tracks.centers(HAND_TRACKS[side]).astype(np.float64)
        bounds = [0, *changes.tolist(), tracks.num_frames - 1]
        for index, frame in enumerate(changes.tolist(), start=1):
            events.append(ContactEvent(
                side, 'grasp' if holding[frame] else 'release', frame,
                float(clip_times[frame]),
                before=_direction_between(points, bounds[index - 1], frame),
                after=_direction_between(points, frame, bounds[index + 1])))
    return sorted(events, key=lambda event: (event.frame, event.hand))


def _object_relations(tracks: Tracks) -> dict[str, ObjectRelation]:
    if not tracks.present('object'):
        return {}
    target = tracks.centers('object').astype(np.float64)
    relations = {}
    for side in HAND_SIDES:
        if tracks.present(HAND_TRACKS[side]):
            offsets = target - tracks.centers(HAND_TRACKS[side])
            relations[side] = ObjectRelation(side, relation_word(*offsets[0]),
                                             relation_word(*offsets[-1]))
    return relations


def _holding_hand(held_frames: dict[str, int]) -> str | None:
    if not any(held_frames.values()):
        return None
    return 'right' if held_frames['right'] >= held_frames['left'] else 'left'
