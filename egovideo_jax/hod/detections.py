"""Hand-object detections per frame: the data classes every detection format and source
makes, and the error a malformed detection file raises.

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

Files: `epic_detections.py` (EPIC-KITCHENS-100 pickles), `jsonl_detections.py` (our JSONL);
per-video sources of them: `detection_sources.py`; live detectors: `detectors.py`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers

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


@contextlib.contextmanager
def field_context(where: str):
    """Prefixes a ValueError raised inside with `where: ` (the hand or object a file's field
    belongs to)."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f'{where}: {error}') from error
