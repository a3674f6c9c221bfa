"""The actions of the procedural demo source: what a clip shows (`ActionSpec`), its Ego4D-style
narration, and the script that moves the hands and the target object through it (`ACTIONS`);
`sample_action_specs` draws balanced specs for a dataset.

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
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from egovideo_jax.demo.drawing import rotate
from egovideo_jax.hod.detections import HAND_SIDES
from egovideo_jax.io.choices import check_choice
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
DIRECTION_VECTORS = {'left': (-1.0, 0.0), 'right': (1.0, 0.0), 'up': (0.0, -1.0),
                     'down': (0.0, 1.0)}
DIRECTION_PHRASES = {'left': 'to the left', 'right': 'to the right', 'up': 'forward',
                     'down': 'backward'}
TRAVEL = 0.22  # how far move/push carry the object
SLIDE = 0.2  # length of the back-and-forth / move-and-back segment
LIFT_SHIFT = (0.0, 0.07)  # a picked-up object comes towards the camera wearer
SHAKE_AMPLITUDE = 0.035
SHAKE_HZ = 2.5
BACK_AND_FORTH_HZ = 1.6


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
        check_choice(self.action, ACTIONS, 'action')
        check_choice(self.hand, HAND_SIDES, 'hand')
        check_choice(self.color, COLORS, 'color')
        check_choice(self.kind, KINDS, 'kind')
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
    motion.palm[side] = ctx.start + np.array([rotate(offset, 0.35 * angle) for angle in turn])
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


__all__ = ['ACTIONS', 'Action', 'ActionSpec', 'COLORS', 'FAST_MOTION_PAIRS', 'KINDS', 'Motion',
           'ScriptContext', 'demo_objects', 'sample_action_specs']
