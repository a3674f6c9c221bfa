"""Procedural egocentric source: a table top seen from above, a left and a right hand and a few
coloured objects, performing scripted actions, with Ego4D-style narrations and ground-truth
hand-object detections in the EPIC format.

Real egocentric video and detector weights cannot be downloaded here; this source exercises
the real pipeline path (video files, `epic` detection pickles, tracks, narrators) and doubles
as the fast-motion benchmark.

Coordinates are normalised to the frame (x right, y down). A clip is rendered at `SUPERSAMPLE`
times the output size on a canvas with a margin for the camera jitter, then cropped and
box-filtered down, so edges are antialiased and sub-pixel jitter is possible.

Fast-motion pairs (`FAST_MOTION_PAIRS`). Evaluation with 4 frames takes the middle frame of
each of 4 segments (`sample_eval(0, T, 4)`, frames `m0..m3`, about a quarter clip apart):
- `shake` vs `hold`: the same held object, the same slow drift; `shake` adds an oscillation
  whose phase runs through a whole number of half periods between consecutive midpoints
  (`sin` is zero at every `m_i`), about 2.5 Hz: 2 periods per quarter of a 3 s clip at 15 fps.
- `back_and_forth` vs `move_and_back`: the object slides along the same segment; the slow
  one goes out and back once at constant speed (at `m0..m3` it is at 1/4, 3/4, 3/4, 1/4 of
  the way), the fast one runs a triangle wave between `m0` and `m3` with `k + 1/4` periods per
  quarter, which passes through exactly those positions at the midpoints.
Both members of a pair start and end in the same place and, rendered with the same seed, give
identical frames at the 4 evaluation midpoints; 16 frames show the oscillation. (A sampler
that picks other frames, e.g. time-centred ones, sees part of the motion.)

Randomness is split into independent streams per seed (layout, shared motion, action
motion, camera, noise, detections), so the two actions of a pair share everything but the
fast motion.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from egovideo_jax.hod.detections import (HAND_SIDES, PORTABLE_OBJECT, BBox, FrameDetections,
                                         HandDetection, ObjectDetection)
from egovideo_jax.media.sampling import sample_eval

COLORS = {
    'red': (205, 40, 40),
    'green': (40, 160, 70),
    'blue': (45, 85, 205),
    'yellow': (235, 200, 40),
    'orange': (240, 125, 30),
    'purple': (135, 60, 175),
}
KINDS = ('cup', 'bottle', 'box', 'ball', 'sponge')
SKIN_TONES = ((232, 186, 152), (214, 160, 122), (176, 122, 88), (240, 200, 170))
SLEEVE_COLORS = ((60, 60, 70), (200, 200, 205), (90, 110, 150), (120, 45, 50))
DIRECTION_VECTORS = {'left': (-1.0, 0.0), 'right': (1.0, 0.0), 'up': (0.0, -1.0),
                     'down': (0.0, 1.0)}
DIRECTION_PHRASES = {'left': 'to the left', 'right': 'to the right', 'up': 'forward',
                     'down': 'backward'}

SUPERSAMPLE = 2
HAND_SIZE = 1.45  # scales the hand drawing (`hand_parts` measures a unit hand)
MARGIN = 0.03  # canvas border around the frame, in frame units: room for the camera jitter
SHADOW_STRENGTH = 0.4
CAMERA_JITTER = 0.008  # frame units (about 1 px at 144 px)
NOISE_SIGMA = 3.0  # sensor noise, uint8 levels
TRAVEL = 0.22  # how far move/push carry the object
SLIDE = 0.2  # length of the back-and-forth / move-and-back segment
LIFT_SHIFT = (0.0, 0.07)  # a picked-up object comes towards the camera wearer
SHAKE_AMPLITUDE = 0.035
SHAKE_HZ = 2.5
BACK_AND_FORTH_HZ = 1.6
OBJECT_SCORES = (0.9, 0.99)  # the target; distractors score lower
DISTRACTOR_SCORES = (0.55, 0.85)
HAND_SCORES = (0.9, 1.0)
# Where distractor objects may stand: the top and the sides, clear of the hands' rest places.
DISTRACTOR_SLOTS = ((0.14, 0.16), (0.5, 0.1), (0.86, 0.16), (0.12, 0.5), (0.88, 0.5))


# ----------------------------------------------------------------------------- actions

@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """What one clip shows: `hand` does `action` to the `color` `kind` object, in `direction`
    for the actions that have one (`ACTIONS[action].directions`)."""
    action: str
    hand: str
    color: str
    kind: str
    direction: str | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f'action: unknown {self.action!r}; expected one of {list(ACTIONS)}')
        if self.hand not in HAND_SIDES:
            raise ValueError(f'hand: expected "left" or "right", got {self.hand!r}')
        if self.color not in COLORS:
            raise ValueError(f'color: unknown {self.color!r}; expected one of {list(COLORS)}')
        if self.kind not in KINDS:
            raise ValueError(f'kind: unknown {self.kind!r}; expected one of {KINDS}')
        directions = ACTIONS[self.action].directions
        if (self.direction is None) != (not directions) or (
                directions and self.direction not in directions):
            raise ValueError(f'direction: {self.action!r} takes one of {directions or "none"}, '
                             f'got {self.direction!r}')

    @property
    def object(self) -> str:
        return f'{self.color} {self.kind}'

    @property
    def fast_motion_only(self) -> bool:
        return ACTIONS[self.action].fast_motion_only

    @property
    def narration(self) -> str:
        """The Ego4D-style original narration: the object is named, the hand is not."""
        return '#C C ' + ACTIONS[self.action].phrase.format(
            object=self.object, direction=DIRECTION_PHRASES.get(self.direction, ''))


@dataclasses.dataclass
class Motion:
    """Per-frame state of the target object and both hands ([T] or [T, 2] arrays)."""
    object_pos: np.ndarray
    object_lift: np.ndarray  # 0 on the table .. 1 held up (drawn larger, shadow further off)
    object_angle: np.ndarray  # radians, clockwise on screen
    # The object path without its fast-motion part: the scene layout depends on this alone,
    # so both actions of a fast-motion pair get the same scene.
    nominal_object_pos: np.ndarray
    palm: dict[str, np.ndarray]
    grip: dict[str, np.ndarray]  # 0 open hand .. 1 fingers closed round the object
    contact: dict[str, np.ndarray]  # bool: the hand touches the target (portable object)
    aim: dict[str, np.ndarray]  # 0 hand along the forearm .. 1 fingers point at the object


@dataclasses.dataclass(frozen=True)
class ScriptContext:
    """What an action script may use: the clip timing, the layout and its own random stream."""
    spec: ActionSpec
    num_frames: int
    fps: float
    start: np.ndarray  # [2] where the target stands at the start
    radius: float
    rest: dict[str, np.ndarray]  # side -> [T, 2] idle palm positions (rest place + sway)
    drift: np.ndarray  # [T, 2] slow sway of a held object, shared by both actions of a pair
    rng: np.random.Generator

    @property
    def frames(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64)

    @property
    def tau(self) -> np.ndarray:
        """Clip time in [0, 1]."""
        return self.frames / max(self.num_frames - 1, 1)

    @property
    def midpoints(self) -> np.ndarray:
        """The frames a 4-frame evaluation sees."""
        return sample_eval(0, self.num_frames, 4).astype(np.float64)

    @property
    def quarter_seconds(self) -> float:
        return float(np.mean(np.diff(self.midpoints))) / self.fps


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    phrase: str  # narration after '#C C ', with {object} and {direction}
    script: Callable[[ScriptContext], Motion]
    directions: tuple[str, ...] = ()
    fast_motion_partner: str | None = None  # the action only fast motion tells apart

    @property
    def fast_motion_only(self) -> bool:
        return self.fast_motion_partner is not None


def _ramp(tau: np.ndarray, begin: float, end: float) -> np.ndarray:
    """Smoothstep from 0 at `begin` to 1 at `end` (eased starts and stops)."""
    x = np.clip((tau - begin) / (end - begin), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _blend(a, b, weight: np.ndarray) -> np.ndarray:
    """Per-frame `a + (b - a) * weight` for scalars, [2] points or [T, 2] paths."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return a + (b - a) * (weight if a.ndim == 0 else weight[:, None])


def _grasp_offset(side: str, radius: float, lateral: bool = False) -> np.ndarray:
    """Palm centre relative to a held object: below it (towards the camera wearer) and to the
    hand's own side, or beside it (`lateral`, so two hands can hold it at once)."""
    sign = -1.0 if side == 'left' else 1.0
    direction = np.array([sign, 0.45]) if lateral else np.array([0.45 * sign, 1.0])
    return direction / np.linalg.norm(direction) * (radius + 0.05)


def _idle_motion(ctx: ScriptContext) -> Motion:
    """Both hands resting, the target standing at its start place."""
    frames = ctx.num_frames
    position = np.repeat(ctx.start[None], frames, axis=0)
    return Motion(
        object_pos=position, object_lift=np.zeros(frames), object_angle=np.zeros(frames),
        nominal_object_pos=position.copy(),
        palm={side: ctx.rest[side].copy() for side in HAND_SIDES},
        grip={side: np.full(frames, 0.25) for side in HAND_SIDES},
        contact={side: np.zeros(frames, bool) for side in HAND_SIDES},
        aim={side: np.zeros(frames) for side in HAND_SIDES})


def _holding(ctx: ScriptContext, motion: Motion, path: np.ndarray, lift) -> Motion:
    """The active hand grips the object along `path` for the whole clip."""
    side = ctx.spec.hand
    motion.object_pos = path
    motion.nominal_object_pos = path.copy()
    motion.object_lift = np.broadcast_to(np.asarray(lift, np.float64), (ctx.num_frames,)).copy()
    motion.palm[side] = path + _grasp_offset(side, ctx.radius)
    motion.grip[side] = np.ones(ctx.num_frames)
    motion.contact[side] = np.ones(ctx.num_frames, bool)
    motion.aim[side] = np.ones(ctx.num_frames)
    return motion


def _direction(ctx: ScriptContext) -> np.ndarray:
    return np.array(DIRECTION_VECTORS[ctx.spec.direction])


def script_reach(ctx: ScriptContext) -> Motion:
    motion, side, tau = _idle_motion(ctx), ctx.spec.hand, ctx.tau
    approach = ctx.start + _grasp_offset(side, ctx.radius) * 1.15
    motion.palm[side] = _blend(ctx.rest[side], approach, _ramp(tau, 0.1, 0.75))
    motion.grip[side] = _blend(0.25, 0.0, _ramp(tau, 0.1, 0.4))
    motion.aim[side] = _ramp(tau, 0.1, 0.5)
    return motion


def script_pick_up(ctx: ScriptContext) -> Motion:
    motion, side, tau = _idle_motion(ctx), ctx.spec.hand, ctx.tau
    offset = _grasp_offset(side, ctx.radius)
    motion.object_pos = _blend(ctx.start, ctx.start + LIFT_SHIFT, _ramp(tau, 0.55, 0.9))
    motion.nominal_object_pos = motion.object_pos.copy()
    motion.object_lift = _ramp(tau, 0.55, 0.85)
    reaching = _blend(ctx.rest[side], ctx.start + offset, _ramp(tau, 0.1, 0.45))
    motion.palm[side] = np.where((tau < 0.45)[:, None], reaching, motion.object_pos + offset)
    motion.grip[side] = _blend(0.25, 0.0, _ramp(tau, 0.1, 0.3)) + _ramp(tau, 0.45, 0.55)
    motion.contact[side] = motion.grip[side] > 0.5
    motion.aim[side] = _ramp(tau, 0.1, 0.4)
    return motion


def script_put_down(ctx: ScriptContext) -> Motion:
    """Picking up played backwards: lowered, released, the hand goes back to rest."""
    lifted = dataclasses.replace(ctx, start=ctx.start - LIFT_SHIFT,
                                 rest={side: path[::-1] for side, path in ctx.rest.items()})
    motion = script_pick_up(lifted)
    for name in ('object_pos', 'object_lift', 'object_angle', 'nominal_object_pos'):
        setattr(motion, name, getattr(motion, name)[::-1].copy())
    for name in ('palm', 'grip', 'contact', 'aim'):
        setattr(motion, name, {side: value[::-1].copy()
                               for side, value in getattr(motion, name).items()})
    return motion


def script_move(ctx: ScriptContext) -> Motion:
    """Lift, carry one way, set down."""
    tau = ctx.tau
    path = _blend(ctx.start, ctx.start + TRAVEL * _direction(ctx), _ramp(tau, 0.2, 0.8))
    return _holding(ctx, _idle_motion(ctx), path, _ramp(tau, 0.05, 0.2) - _ramp(tau, 0.8, 0.95))


def _slow_out_and_back(ctx: ScriptContext) -> np.ndarray:
    """Fraction of the slide segment covered: out and back once at constant speed, through
    1/4, 3/4, 3/4, 1/4 at the evaluation midpoints."""
    m = ctx.midpoints
    return np.interp(ctx.frames, [0, m[0], m[1], (m[1] + m[2]) / 2, m[2], m[3],
                                  ctx.num_frames - 1], [0, 0.25, 0.75, 1, 0.75, 0.25, 0])


def script_move_and_back(ctx: ScriptContext) -> Motion:
    fraction = _slow_out_and_back(ctx)
    path = ctx.start + SLIDE * fraction[:, None] * _direction(ctx)
    return _holding(ctx, _idle_motion(ctx), path, 0.0)


def script_back_and_forth(ctx: ScriptContext) -> Motion:
    """A triangle wave over the same segment between the first and last midpoints: `k + 1/4`
    periods per quarter put it at 1/4, 3/4, 3/4, 1/4 of the way at the midpoints, like
    `move_and_back`; outside that span it follows the slow path."""
    m = ctx.midpoints
    periods = max(1, round(BACK_AND_FORTH_HZ * ctx.quarter_seconds - 0.25)) + 0.25
    phase = np.interp(ctx.frames, m, 0.125 + periods * np.arange(4))
    triangle = 1 - np.abs(1 - 2 * np.mod(phase, 1.0))
    slow = _slow_out_and_back(ctx)
    inside = (ctx.frames >= m[0]) & (ctx.frames <= m[3])
    fraction = np.where(inside, triangle, slow)
    motion = _holding(ctx, _idle_motion(ctx), ctx.start + SLIDE * fraction[:, None] *
                      _direction(ctx), 0.0)
    motion.nominal_object_pos = ctx.start + SLIDE * slow[:, None] * _direction(ctx)
    return motion


def script_hold(ctx: ScriptContext) -> Motion:
    return _holding(ctx, _idle_motion(ctx), ctx.start + ctx.drift, 1.0)


def script_shake(ctx: ScriptContext) -> Motion:
    """`hold` plus an oscillation with a whole number of half periods between consecutive
    midpoints (so it is at rest at each), faded in and out at the clip ends."""
    m, frames = ctx.midpoints, ctx.frames
    half_periods = max(2, round(2 * SHAKE_HZ * ctx.quarter_seconds))
    rate = half_periods / np.mean(np.diff(m))  # half periods per frame, to extrapolate
    phase = np.interp(frames, m, half_periods * np.arange(4))
    phase = np.where(frames < m[0], (frames - m[0]) * rate, phase)
    phase = np.where(frames > m[3], 3 * half_periods + (frames - m[3]) * rate, phase)
    envelope = _ramp(frames, 0, m[0]) * (1 - _ramp(frames, m[3], ctx.num_frames - 1))
    angle = ctx.rng.uniform(-0.5, 0.5)  # mostly sideways
    axis = np.array([np.cos(angle), np.sin(angle)])
    shake = SHAKE_AMPLITUDE * (envelope * np.sin(np.pi * phase))[:, None] * axis
    motion = _holding(ctx, _idle_motion(ctx), ctx.start + ctx.drift + shake, 1.0)
    motion.nominal_object_pos = ctx.start + ctx.drift
    return motion


def script_push(ctx: ScriptContext) -> Motion:
    """An open hand comes to the far side of the object and slides it along the table."""
    motion, side, tau = _idle_motion(ctx), ctx.spec.hand, ctx.tau
    direction = _direction(ctx)
    offset = -direction * (ctx.radius + 0.085) + np.array([0.0, 0.02])
    motion.object_pos = _blend(ctx.start, ctx.start + TRAVEL * direction, _ramp(tau, 0.35, 0.85))
    motion.nominal_object_pos = motion.object_pos.copy()
    approach = _blend(ctx.rest[side], ctx.start + offset, _ramp(tau, 0.05, 0.3))
    motion.palm[side] = np.where((tau < 0.3)[:, None], approach, motion.object_pos + offset)
    motion.grip[side] = np.full(ctx.num_frames, 0.3)
    motion.contact[side] = tau >= 0.3
    motion.aim[side] = _ramp(tau, 0.05, 0.3)
    return motion


def script_rotate(ctx: ScriptContext) -> Motion:
    """The object turns a quarter in place; the gripping hand follows round part of the way."""
    tau, side = ctx.tau, ctx.spec.hand
    turn = (np.pi / 2 if ctx.spec.direction == 'clockwise' else -np.pi / 2) * _ramp(
        tau, 0.15, 0.85)
    motion = _holding(ctx, _idle_motion(ctx), np.repeat(ctx.start[None], ctx.num_frames, 0), 0.0)
    motion.object_angle = turn
    offset = _grasp_offset(side, ctx.radius)
    motion.palm[side] = ctx.start + np.array([_rotate(offset, 0.35 * angle) for angle in turn])
    return motion


def script_hand_over(ctx: ScriptContext) -> Motion:
    """`spec.hand` brings the held object to the middle, the other hand takes it there and
    carries it to its own side."""
    motion, tau = _idle_motion(ctx), ctx.tau
    giver = ctx.spec.hand
    taker = 'right' if giver == 'left' else 'left'
    toward_taker = 1.0 if taker == 'right' else -1.0
    start = np.array([0.5 - 0.17 * toward_taker, ctx.start[1] + 0.05])
    meeting = np.array([0.5, start[1] + 0.03])
    end = meeting + np.array([0.2 * toward_taker, 0.05])
    path = _blend(start, meeting, _ramp(tau, 0.1, 0.45))
    path = _blend(path, end, _ramp(tau, 0.6, 0.9))
    motion.object_pos, motion.nominal_object_pos = path, path.copy()
    motion.object_lift = np.ones(ctx.num_frames)
    giver_offset = _grasp_offset(giver, ctx.radius, lateral=True)
    taker_offset = _grasp_offset(taker, ctx.radius, lateral=True)
    motion.palm[giver] = _blend(path + giver_offset, ctx.rest[giver], _ramp(tau, 0.6, 0.9))
    motion.grip[giver] = 1 - _ramp(tau, 0.53, 0.6)
    motion.aim[giver] = 1 - _ramp(tau, 0.6, 0.8)
    approach = _blend(ctx.rest[taker], meeting + taker_offset, _ramp(tau, 0.15, 0.45))
    motion.palm[taker] = np.where((tau < 0.45)[:, None], approach, path + taker_offset)
    motion.grip[taker] = _blend(0.25, 0.0, _ramp(tau, 0.15, 0.3)) + _ramp(tau, 0.45, 0.52)
    motion.aim[taker] = _ramp(tau, 0.15, 0.4)
    for side in HAND_SIDES:
        motion.contact[side] = motion.grip[side] > 0.5
    return motion


ACTIONS: dict[str, Action] = {action.name: action for action in (
    Action('reach', 'reaches for the {object}', script_reach),
    Action('pick_up', 'picks up the {object}', script_pick_up),
    Action('put_down', 'puts down the {object}', script_put_down),
    Action('move', 'moves the {object} {direction}', script_move,
           directions=('left', 'right', 'up', 'down')),
    Action('push', 'pushes the {object} {direction}', script_push,
           directions=('left', 'right', 'up')),
    Action('rotate', 'turns the {object}', script_rotate,
           directions=('clockwise', 'counterclockwise')),
    Action('hand_over', 'passes the {object} to the other hand', script_hand_over),
    Action('hold', 'holds the {object}', script_hold, fast_motion_partner='shake'),
    Action('shake', 'shakes the {object}', script_shake, fast_motion_partner='hold'),
    Action('move_and_back', 'moves the {object} {direction} and back', script_move_and_back,
           directions=('left', 'right', 'up'), fast_motion_partner='back_and_forth'),
    Action('back_and_forth', 'moves the {object} back and forth', script_back_and_forth,
           directions=('left', 'right', 'up'), fast_motion_partner='move_and_back'),
)}
FAST_MOTION_PAIRS = (('shake', 'hold'), ('back_and_forth', 'move_and_back'))


def demo_objects(num_objects: int = 0) -> list[tuple[str, str]]:
    """The (colour, kind) objects clips are drawn from: all 30 (`num_objects` 0), or the first
    `num_objects` of an order where the first five differ in both colour and kind (a small
    vocabulary makes the actions, not the objects, what a model must learn)."""
    total = len(COLORS) * len(KINDS)
    if not 0 <= num_objects <= total:
        raise ValueError(f'num_objects: expected 0 (all) .. {total}, got {num_objects}')
    if num_objects == 0:
        return [(color, kind) for color in COLORS for kind in KINDS]
    colors = list(COLORS)
    # i -> (i mod 6, i mod 5) visits every pair once (6 and 5 are coprime).
    return [(colors[i % len(colors)], KINDS[i % len(KINDS)]) for i in range(num_objects)]


def sample_action_specs(num_clips: int, seed: int, num_objects: int = 0) -> list[ActionSpec]:
    """`num_clips` specs balanced over actions (shuffled rounds through all of them), over
    hands and directions within each action, and over the objects (`demo_objects`)."""
    rng = np.random.default_rng(seed)
    names = list(ACTIONS)
    variants = {}  # action -> shuffled (hand, direction) cycle
    for name in names:
        combos = [(hand, direction) for direction in (ACTIONS[name].directions or (None,))
                  for hand in HAND_SIDES]
        variants[name] = [combos[i] for i in rng.permutation(len(combos))]
    objects = demo_objects(num_objects)
    counts = dict.fromkeys(names, 0)
    specs, round_order, object_order = [], [], []
    for _ in range(num_clips):
        if not round_order:
            round_order = [names[i] for i in rng.permutation(len(names))]
        if not object_order:
            object_order = [objects[i] for i in rng.permutation(len(objects))]
        name = round_order.pop()
        hand, direction = variants[name][counts[name] % len(variants[name])]
        counts[name] += 1
        color, kind = object_order.pop()
        specs.append(ActionSpec(name, hand, color, kind, direction))
    return specs


# ----------------------------------------------------------------------------- geometry

def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    """Clockwise on screen for a positive angle (y points down)."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


@functools.cache
def _unit_arc(start: float, stop: float, points: int, endpoint: bool) -> tuple[np.ndarray, ...]:
    """`(cos, sin)` columns [points, 1] of angles from `start` to `stop` (shared, read-only)."""
    angles = np.linspace(start, stop, points, endpoint=endpoint)[:, None]
    return np.cos(angles), np.sin(angles)


def _ellipse(center, axis_u, axis_v, u, v, points: int = 20) -> np.ndarray:
    cos, sin = _unit_arc(0, 2 * np.pi, points, False)
    return center + axis_u * cos * u + axis_v * sin * v


def _circle(center, radius, points: int = 20) -> np.ndarray:
    return _ellipse(center, radius, radius, np.array([1.0, 0.0]), np.array([0.0, 1.0]), points)


def _capsule(start, end, width_start, width_end=None, points: int = 6) -> np.ndarray:
    """A stadium from `start` to `end` (widths at each end; tapered when they differ)."""
    width_end = width_start if width_end is None else width_end
    along = _unit(np.asarray(end, np.float64) - start)
    across = np.array([-along[1], along[0]])
    cos, sin = _unit_arc(-np.pi / 2, np.pi / 2, points, True)
    cap_end = end + (cos * along + sin * across) * width_end / 2
    cap_start = start - (cos * along + sin * across) * width_start / 2
    return np.concatenate([cap_end, cap_start])


def _rectangle(center, half_length, half_width, angle, chamfer: float = 0.0) -> np.ndarray:
    along = _rotate(np.array([1.0, 0.0]), angle)
    across = np.array([-along[1], along[0]])
    corners = []
    for su, sv in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        corner = center + su * half_length * along + sv * half_width * across
        if chamfer:  # cut each corner: two points instead of one
            corners += [corner - su * chamfer * along, corner - sv * chamfer * across]
            if su * sv < 0:
                corners[-2:] = corners[-2:][::-1]
        else:
            corners.append(corner)
    return np.array(corners)


def _shade(color, amount: float) -> tuple[int, int, int]:
    """Darker (amount < 0, towards black) or lighter (> 0, towards white)."""
    color = np.asarray(color, np.float64)
    target = 255.0 if amount > 0 else 0.0
    return tuple(int(c) for c in np.round(color + (target - color) * abs(amount)))


@dataclasses.dataclass(frozen=True)
class Part:
    """One filled polygon (frame units) with an outline."""
    polygon: np.ndarray
    fill: tuple[int, int, int]
    outline: tuple[int, int, int] | None = None


def object_parts(kind: str, color, center, radius: float, angle: float) -> list[Part]:
    """The polygons of one object seen from above, drawn in order; the first one is the
    silhouette that casts the shadow."""
    center = np.asarray(center, np.float64)
    dark, light = _shade(color, -0.4), _shade(color, 0.45)
    along = _rotate(np.array([1.0, 0.0]), angle)
    across = np.array([-along[1], along[0]])
    if kind == 'cup':
        handle = _capsule(center + along * 0.8 * radius, center + along * 1.45 * radius,
                          0.38 * radius)
        # The rim comes first as the silhouette and again over the handle's inner end.
        return [Part(_circle(center, radius), color, dark), Part(handle, color, dark),
                Part(_circle(center, radius), color, dark),
                Part(_circle(center, 0.74 * radius), _shade(color, -0.55)),
                Part(_circle(center - 0.2 * radius, 0.25 * radius), _shade(color, -0.35))]
    if kind == 'bottle':
        body = _capsule(center - along * 1.05 * radius, center + along * 0.55 * radius,
                        1.0 * radius)
        neck = _capsule(center + along * 0.55 * radius, center + along * 1.15 * radius,
                        0.5 * radius)
        label = _rectangle(center - along * 0.2 * radius, 0.38 * radius, 0.5 * radius, angle)
        shine = _capsule(center - along * 0.9 * radius - across * 0.25 * radius,
                         center + along * 0.4 * radius - across * 0.25 * radius, 0.14 * radius)
        return [Part(body, color, dark), Part(neck, color, dark), Part(label, light),
                Part(shine, _shade(color, 0.6)),
                Part(_circle(center + along * 1.2 * radius, 0.3 * radius), (235, 235, 230),
                     (150, 150, 150))]
    if kind == 'box':
        tape = _rectangle(center, 0.85 * radius, 0.16 * radius, angle)
        return [Part(_rectangle(center, 0.85 * radius, 0.68 * radius, angle), color, dark),
                Part(tape, light),
                Part(_rectangle(center, 0.85 * radius, 0.02 * radius, angle), dark)]
    if kind == 'ball':
        seam = _capsule(center - along * 0.8 * radius, center + along * 0.8 * radius,
                        0.12 * radius)
        return [Part(_circle(center, 0.85 * radius), color, dark), Part(seam, dark),
                Part(_circle(center - 0.3 * radius, 0.2 * radius), _shade(color, 0.6))]
    if kind == 'sponge':
        body = _rectangle(center, 0.95 * radius, 0.6 * radius, angle, chamfer=0.18 * radius)
        scrub = _rectangle(center + along * 0.48 * radius, 0.47 * radius, 0.6 * radius, angle)
        pores = [Part(_circle(center + along * dx * radius + across * dy * radius,
                              0.09 * radius, 6), dark)
                 for dx, dy in ((-0.6, -0.3), (-0.3, 0.25), (-0.7, 0.3), (-0.2, -0.25))]
        return [Part(body, color, dark), Part(scrub, _shade(color, -0.3), dark), *pores]
    raise ValueError(f'kind: unknown {kind!r}')


def hand_parts(side: str, palm: np.ndarray, forward: np.ndarray, arm_direction: np.ndarray,
               grip: float, skin, sleeve) -> tuple[list[Part], list[Part]]:
    """`(arm parts, hand parts)` of a hand seen from above, palm down, fingers along
    `forward`, forearm along `arm_direction`; the thumb is on the inner side (the right of a
    left hand). The last hand part is a highlight, not part of the silhouette."""
    forward = _unit(forward)
    thumb_side = 1.0 if side == 'left' else -1.0  # +1: the thumb is to the right of `forward`
    inward = np.array([-forward[1], forward[0]]) * thumb_side

    def at(ahead: float, towards_thumb: float) -> np.ndarray:
        return palm + (forward * ahead + inward * towards_thumb) * HAND_SIZE

    def size(value: float) -> float:
        return value * HAND_SIZE

    outline = _shade(skin, -0.3)
    wrist = at(-0.032, 0)
    elbow = wrist - _unit(arm_direction) * 0.5
    sleeve_start = wrist + (elbow - wrist) * 0.4
    arm = [Part(_capsule(wrist, elbow, size(0.062), size(0.08)), skin, outline),
           Part(_capsule(sleeve_start, elbow + (elbow - wrist), size(0.082), size(0.1)), sleeve,
                _shade(sleeve, -0.35))]
    hand = [Part(_ellipse(palm, size(0.043), size(0.037), forward, inward), skin, outline)]
    finger_color = _shade(skin, -0.1 * grip)  # curled fingers catch less light
    # index .. little finger: offset from the palm axis, splay (radians), length
    for towards_thumb, splay, length in ((0.024, 0.14, 0.042), (0.008, 0.04, 0.047),
                                         (-0.008, -0.06, 0.044), (-0.024, -0.17, 0.034)):
        base = at(0.028, towards_thumb)
        direction = _rotate(forward, thumb_side * splay * (1 - grip))
        tip = base + direction * size(length) * (1 - 0.55 * grip)
        hand.append(Part(_capsule(base, tip, size(0.017), size(0.015)), finger_color, outline))
    thumb_base = at(-0.006, 0.026)
    thumb_direction = _rotate(forward, thumb_side * (1.0 - 0.55 * grip))
    hand.append(Part(_capsule(thumb_base, thumb_base + thumb_direction * size(0.04) *
                              (1 - 0.3 * grip), size(0.021), size(0.017)), skin, outline))
    highlight = palm + np.array([-0.007, -0.007]) * HAND_SIZE  # towards the light
    hand.append(Part(_ellipse(highlight, size(0.02), size(0.015), forward, inward, 12),
                     _shade(skin, 0.12)))
    return arm, hand


# ----------------------------------------------------------------------------- scene

@dataclasses.dataclass(frozen=True)
class SceneObject:
    color: str
    kind: str
    center: tuple[float, float]
    radius: float
    angle: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """The drawn layout: the table, skin and sleeve colours and the objects (the target first,
    at its start place), for visual checks and tests."""
    table: str
    skin: tuple[int, int, int]
    sleeve: tuple[int, int, int]
    objects: tuple[SceneObject, ...]


@dataclasses.dataclass(frozen=True)
class RenderedClip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    detections: list[FrameDetections]  # one per frame; frame_number = index + 1 (EPIC)
    spec: ActionSpec
    fps: float
    scene: Scene

    @property
    def narration(self) -> str:
        return self.spec.narration

    @property
    def action(self) -> str:
        return self.spec.action

    @property
    def hand(self) -> str:
        return self.spec.hand

    @property
    def object(self) -> str:
        return self.spec.object

    @property
    def fast_motion_only(self) -> bool:
        return self.spec.fast_motion_only


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ('layout', 'shared_motion', 'action_motion', 'camera', 'noise', 'detections')
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def _smooth_wave(rng: np.random.Generator, num_frames: int, fps: float, amplitude: float,
                 dims: int = 2) -> np.ndarray:
    """[T, dims] slow random sway: a few sines of 0.1-0.7 Hz with random phases."""
    seconds = np.arange(num_frames)[:, None] / fps
    wave = np.zeros((num_frames, dims))
    for _ in range(3):
        frequency = rng.uniform(0.1, 0.7, dims)
        phase = rng.uniform(0, 2 * np.pi, dims)
        wave += np.sin(2 * np.pi * frequency * seconds + phase)
    return amplitude / 3 * wave


def _table_texture(style: str, rng: np.random.Generator, pixels: int, world: np.ndarray
                   ) -> np.ndarray:
    """float [pixels, pixels, 3] table colours; `world` holds the frame coordinates of the
    canvas pixel centres (so the texture moves with the camera)."""
    x, y = world[None, :], world[:, None]
    if style == 'wood':
        base = np.array(rng.choice([(112, 78, 52), (96, 66, 46)]), np.float64)
        grain = np.sin(2 * np.pi * (y * rng.uniform(9, 14) + 0.08 * np.sin(
            2 * np.pi * x * rng.uniform(1, 2.5) + rng.uniform(0, 6))))
        fine = np.sin(2 * np.pi * (y * 47 + 0.03 * np.sin(2 * np.pi * x * 5)))
        shade = 1 + 0.08 * grain + 0.04 * fine
    elif style == 'counter':
        base = np.array(rng.choice([(150, 152, 158), (118, 120, 124)]), np.float64)
        coarse = rng.normal(0, 1, (pixels // 8, pixels // 8)).astype(np.float32)
        blotches = np.asarray(Image.fromarray(coarse).resize((pixels, pixels), Image.BICUBIC))
        speckles = (rng.random((pixels, pixels)) < 0.03) * rng.uniform(-0.25, 0.25,
                                                                         (pixels, pixels))
        shade = 1 + 0.03 * blotches + speckles
    else:  # cutting mat with a grid
        base = np.array(rng.choice([(66, 84, 76), (62, 68, 84)]), np.float64)
        on_line_x = np.abs((x + 0.05) % 0.1 - 0.05) < 0.004
        on_line_y = np.abs((y + 0.05) % 0.1 - 0.05) < 0.004
        shade = 1 + 0.18 * (on_line_x | on_line_y)
    return np.broadcast_to(shade, (pixels, pixels))[..., None] * base


def _to_pixels(polygon: np.ndarray, scale: float) -> list[tuple[float, float]]:
    return [tuple(point) for point in ((polygon + MARGIN) * scale).tolist()]


def _draw_parts(draw: ImageDraw.ImageDraw, parts: list[Part], scale: float) -> None:
    for part in parts:
        draw.polygon(_to_pixels(part.polygon, scale), fill=part.fill, outline=part.outline)


def _with_shadows(image: Image.Image, shadowed: Image.Image,
                  silhouettes: list[tuple[np.ndarray, float]], scale: float, blur: float
                  ) -> Image.Image:
    """`image` blended towards its darker version `shadowed` under soft shadows of
    `(polygon, height)` pairs, cast towards the bottom right (light from the top left)."""
    # Soft shadows need no detail: drawn and blurred at output resolution, then scaled up.
    mask = Image.new('L', (image.width // SUPERSAMPLE, image.height // SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, height in silhouettes:
        draw.polygon(_to_pixels(polygon + height * np.array([0.7, 1.0]), scale / SUPERSAMPLE),
                     fill=255)
    mask = mask.filter(ImageFilter.BoxBlur(blur)).resize(image.size, Image.BILINEAR)
    return Image.composite(shadowed, image, mask)


def _darker(image: Image.Image) -> Image.Image:
    return image.point(lambda level: int(level * (1 - SHADOW_STRENGTH)))


def _arm_and_hand_directions(side: str, palm: np.ndarray, target: np.ndarray, aim: float
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The forearm comes from an elbow below the frame on the hand's side; the fingers point
    along it, turned towards the object by `aim`."""
    elbow = np.array([0.05 if side == 'left' else 0.95, 1.45])
    along_arm = _unit(palm - elbow)
    return along_arm, _unit((1 - aim) * along_arm + aim * _unit(target - palm))


def _bbox(points: np.ndarray, camera: np.ndarray) -> tuple[BBox, float] | None:
    """The box of `points` in the frame seen from `camera`, clipped to the frame, and the
    fraction of its area that is inside; None when nothing is."""
    points = points - camera
    low, high = points.min(0), points.max(0)
    clipped_low, clipped_high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    area = np.prod(high - low)
    inside = np.prod(np.maximum(clipped_high - clipped_low, 0))
    if inside <= 0:
        return None
    return BBox(*clipped_low, *clipped_high), float(inside / area)


def render_clip(spec: ActionSpec, seed: int, size: int = 144, fps: float = 15,
                seconds: float = 3.0, miss_rate: float = 0.05) -> RenderedClip:
    """Renders one clip of `round(seconds * fps)` frames of `size` x `size` pixels.

    Deterministic in `(spec, seed, size, fps, seconds, miss_rate)`. Each hand and object
    detection is left out of a frame with probability `miss_rate` (as a real detector misses
    some), so tracks need interpolation.
    """
    if size < 16 or size % 2:
        raise ValueError(f'size: expected an even number of pixels >= 16, got {size}')
    num_frames = int(round(seconds * fps))
    if num_frames < 8:
        raise ValueError(f'clip too short: {seconds} s at {fps} fps gives {num_frames} frames; '
                         'need at least 8')
    if not 0 <= miss_rate < 1:
        raise ValueError(f'miss_rate: expected a probability in [0, 1), got {miss_rate}')
    rng = _streams(seed)
    scene, motion = _layout_and_motion(spec, rng, num_frames, fps)
    frames, cameras, geometry = _render_frames(scene, motion, spec, rng, num_frames, fps, size)
    detections = _detections(geometry, cameras, motion, rng['detections'], miss_rate)
    return RenderedClip(frames, detections, spec, float(fps), scene)


def _layout_and_motion(spec: ActionSpec, rng: dict[str, np.random.Generator], num_frames: int,
                       fps: float) -> tuple[Scene, Motion]:
    """The scene (a fixed number of draws from the layout stream, whatever the action; the
    distractors in the way of the target's nominal path left out) and the motion."""
    layout = rng['layout']
    table = str(layout.choice(['wood', 'counter', 'mat']))
    skin = SKIN_TONES[layout.integers(len(SKIN_TONES))]
    sleeve = SLEEVE_COLORS[layout.integers(len(SLEEVE_COLORS))]
    radius = float(layout.uniform(0.065, 0.08))
    start = np.array([layout.uniform(0.4, 0.6), layout.uniform(0.32, 0.46)])
    angle = float(layout.uniform(-0.6, 0.6))
    rest = {side: np.array([0.2 if side == 'left' else 0.8, 0.86]) + layout.uniform(-0.03, 0.03, 2)
            for side in HAND_SIDES}
    other_colors = [color for color in COLORS if color != spec.color]
    slot_order = layout.permutation(len(DISTRACTOR_SLOTS))
    color_order = layout.permutation(len(other_colors))
    candidates = []
    for index in range(3):
        slot = np.array(DISTRACTOR_SLOTS[slot_order[index]]) + layout.uniform(-0.03, 0.03, 2)
        candidates.append(SceneObject(other_colors[color_order[index]],
                                      KINDS[layout.integers(len(KINDS))], tuple(slot),
                                      float(layout.uniform(0.055, 0.07)),
                                      float(layout.uniform(-1.5, 1.5))))

    shared = rng['shared_motion']
    sway = {side: _smooth_wave(shared, num_frames, fps, 0.012) for side in HAND_SIDES}
    drift = _smooth_wave(shared, num_frames, fps, 0.008)
    context = ScriptContext(spec, num_frames, fps, start, radius,
                            {side: rest[side] + sway[side] for side in HAND_SIDES}, drift,
                            rng['action_motion'])
    motion = ACTIONS[spec.action].script(context)
    motion.object_angle = motion.object_angle + angle

    def clear_of_path(obj: SceneObject) -> bool:
        gaps = np.linalg.norm(motion.nominal_object_pos - np.array(obj.center), axis=1)
        return gaps.min() > radius * 1.5 + obj.radius * 1.5 + 0.02

    others = [obj for obj in candidates if clear_of_path(obj)]
    target = SceneObject(spec.color, spec.kind, tuple(motion.object_pos[0]), radius,
                         float(motion.object_angle[0]))
    return Scene(table, skin, sleeve, (target, *others)), motion


@dataclasses.dataclass
class _Geometry:
    """World-space outline points behind the boxes: per frame for the target and the hands,
    once for the distractors (they do not move)."""
    target: list[np.ndarray]
    hands: list[dict[str, np.ndarray]]
    others: list[np.ndarray]


def _render_frames(scene: Scene, motion: Motion, spec: ActionSpec,
                   rng: dict[str, np.random.Generator], num_frames: int, fps: float, size: int
                   ) -> tuple[np.ndarray, np.ndarray, _Geometry]:
    """uint8 frames, the camera offset of each (frame units) and the outlines behind the boxes.
    """
    scale = size * SUPERSAMPLE  # canvas pixels per frame unit
    canvas = int(round((1 + 2 * MARGIN) * scale))
    world = (np.arange(canvas) + 0.5) / scale - MARGIN
    table = Image.fromarray(np.clip(_table_texture(scene.table, rng['layout'], canvas, world),
                                    0, 255).astype(np.uint8))
    other_parts = [object_parts(obj.kind, COLORS[obj.color], obj.center, obj.radius, obj.angle)
                   for obj in scene.objects[1:]]
    background = _with_shadows(table, _darker(table),
                               [(parts[0].polygon, 0.012) for parts in other_parts], scale, 1)
    draw = ImageDraw.Draw(background)
    for parts in other_parts:
        _draw_parts(draw, parts, scale)
    background_shadowed = _darker(background)

    # Head-mounted camera: slow sway, quantised to canvas pixels so boxes match the pixels.
    offsets = _smooth_wave(rng['camera'], num_frames, fps, CAMERA_JITTER)
    crop_origin = np.round((offsets + MARGIN) * scale).astype(int)
    cameras = crop_origin / scale - MARGIN
    gains = 1 + _smooth_wave(rng['camera'], num_frames, fps, 0.04, dims=1)[:, 0]
    radial = np.hypot(*np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size)))
    vignette = (1 - 0.12 * radial ** 2)[..., None]
    noise_bank = rng['noise'].normal(0, NOISE_SIGMA, (2, size + 16, size + 16, 3)).astype(
        np.float32)
    noise_picks = rng['noise'].integers(0, [2, 16, 16], (num_frames, 3))

    color = COLORS[spec.color]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    geometry = _Geometry([], [], [np.concatenate([part.polygon for part in parts])
                                  for parts in other_parts])
    for t in range(num_frames):
        center = motion.object_pos[t]
        lift = float(motion.object_lift[t])
        target_parts = object_parts(spec.kind, color, center, scene.objects[0].radius *
                                    (1 + 0.15 * lift), float(motion.object_angle[t]))
        arms, hands = {}, {}
        for side in HAND_SIDES:
            arm_direction, forward = _arm_and_hand_directions(
                side, motion.palm[side][t], center, motion.aim[side][t])
            arms[side], hands[side] = hand_parts(side, motion.palm[side][t], forward,
                                                 arm_direction, float(motion.grip[side][t]),
                                                 scene.skin, scene.sleeve)
        silhouettes = [(target_parts[0].polygon, 0.012 + 0.03 * lift)]
        silhouettes += [(part.polygon, 0.04) for side in HAND_SIDES
                        for part in arms[side] + hands[side][:-1]]
        image = _with_shadows(background, background_shadowed, silhouettes, scale, 2.5)
        draw = ImageDraw.Draw(image)
        _draw_parts(draw, target_parts, scale)
        for side in HAND_SIDES:
            _draw_parts(draw, arms[side], scale)
        for side in HAND_SIDES:
            _draw_parts(draw, hands[side], scale)
        left, top = crop_origin[t]
        image = image.crop((left, top, left + scale, top + scale)).reduce(SUPERSAMPLE)
        bank, dy, dx = noise_picks[t]
        noise = noise_bank[bank, dy:dy + size, dx:dx + size]
        frames[t] = np.clip(np.asarray(image, np.float32) * (vignette * gains[t]) + noise,
                            0, 255).astype(np.uint8)
        geometry.target.append(np.concatenate([part.polygon for part in target_parts]))
        geometry.hands.append({side: np.concatenate([part.polygon for part in hands[side]])
                               for side in HAND_SIDES})
    return frames, cameras, geometry


def _detections(geometry: _Geometry, cameras: np.ndarray, motion: Motion,
                rng: np.random.Generator, miss_rate: float) -> list[FrameDetections]:
    """Ground-truth detections per frame: visible hands (mostly inside the frame) and objects;
    the target scores highest. Scores and misses come from their own stream."""
    num_frames, num_others = len(cameras), len(geometry.others)
    hand_scores = rng.uniform(*HAND_SCORES, (num_frames, len(HAND_SIDES)))
    target_scores = rng.uniform(*OBJECT_SCORES, num_frames)
    other_scores = rng.uniform(*DISTRACTOR_SCORES, (num_frames, num_others))
    missed = rng.random((num_frames, len(HAND_SIDES) + 1 + num_others)) < miss_rate
    frames = []
    for t, camera in enumerate(cameras):
        object_boxes = [_bbox(points, camera)
                        for points in [geometry.target[t], *geometry.others]]
        objects = [ObjectDetection(box[0], score)
                   for box, score, miss in zip(object_boxes,
                                               [target_scores[t], *other_scores[t]],
                                               missed[t, len(HAND_SIDES):])
                   if box is not None and not miss]
        visible_centers = [np.array(box[0].center) for box in object_boxes if box is not None]
        hands = []
        for index, side in enumerate(HAND_SIDES):
            box = _bbox(geometry.hands[t][side], camera)
            if box is None or box[1] < 0.3 or missed[t, index]:
                continue
            hand_center = np.array(box[0].center)
            if motion.contact[side][t] and object_boxes[0] is not None:
                touched = np.array(object_boxes[0][0].center)
            elif visible_centers:
                touched = min(visible_centers, key=lambda c: np.linalg.norm(c - hand_center))
            else:
                touched = hand_center
            state = PORTABLE_OBJECT if motion.contact[side][t] else 0
            hands.append(HandDetection(box[0], hand_scores[t, index], state,
                                       tuple(touched - hand_center), side))
        frames.append(FrameDetections(t + 1, tuple(hands), tuple(objects)))
    return frames


__all__ = [
    'ACTIONS', 'Action', 'ActionSpec', 'COLORS', 'FAST_MOTION_PAIRS', 'KINDS', 'Motion',
    'RenderedClip', 'Scene', 'SceneObject', 'ScriptContext', 'hand_parts', 'object_parts',
    'demo_objects', 'render_clip', 'sample_action_specs',
]
