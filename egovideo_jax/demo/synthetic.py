"""Procedural egocentric source, rendered: a table top seen from above, a left and a right
hand and a few coloured objects performing the scripted actions of `actions.py` (drawn with
`drawing.py`), as frames with ground-truth hand-object detections in the EPIC format.

Two views (`VIEWS`) of the same scene: 'ego', the head-mounted camera looking down at the
table, and 'side', a static camera across the table (`side_view.py`), which sees the same
top-down drawing in perspective with the room and the person behind it.

Real egocentric video and detector weights cannot be downloaded here; this source exercises
the real pipeline path (video files, `epic` detection pickles, tracks, narrators) and doubles
as the fast-motion benchmark.

Coordinates are normalised to the frame (x right, y down). A clip is drawn at `SUPERSAMPLE`
times the output size on a canvas with a margin for the camera jitter; a camera turns it into
the frame (the head camera crops it), which is box-filtered down, so edges are antialiased and
sub-pixel jitter is possible.

Randomness is split into independent streams per seed (layout, shared motion, action
motion, camera, noise, detections, room), so the two actions of a fast-motion pair share
everything but the fast motion, and both views share everything but the camera.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from egovideo_jax.demo.actions import ACTIONS, COLORS, KINDS, ActionSpec, Motion, ScriptContext
from egovideo_jax.demo.drawing import (
    draw_parts,
    elbow_anchor,
    hand_parts,
    object_parts,
    to_pixels,
    unit,
)
from egovideo_jax.demo.side_view import SideCamera
from egovideo_jax.hod.detections import (
    HAND_SIDES,
    PORTABLE_OBJECT,
    BBox,
    FrameDetections,
    HandDetection,
    ObjectDetection,
)
from egovideo_jax.io.choices import check_choice

VIEWS = ('ego', 'side')
SKIN_TONES = ((232, 186, 152), (214, 160, 122), (176, 122, 88), (240, 200, 170))
SLEEVE_COLORS = ((60, 60, 70), (200, 200, 205), (90, 110, 150), (120, 45, 50))
SUPERSAMPLE = 2
MARGIN = 0.03  # canvas border around the frame, in frame units: room for the camera jitter
SHADOW_STRENGTH = 0.4
CAMERA_JITTER = 0.008  # frame units (about 1 px at 144 px)
NOISE_SIGMA = 3.0  # sensor noise, uint8 levels
OBJECT_SCORES = (0.9, 0.99)  # the target; distractors score lower
DISTRACTOR_SCORES = (0.55, 0.85)
HAND_SCORES = (0.9, 1.0)
# Where distractor objects may stand: the top and the sides, clear of the hands' rest places.
DISTRACTOR_SLOTS = ((0.14, 0.16), (0.5, 0.1), (0.86, 0.16), (0.12, 0.5), (0.88, 0.5))


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
    view: str  # one of VIEWS

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
    # New streams go last: spawned children depend on their index only.
    names = ('layout', 'shared_motion', 'action_motion', 'camera', 'noise', 'detections',
             'room')
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


def _with_shadows(image: Image.Image, shadowed: Image.Image,
                  silhouettes: list[tuple[np.ndarray, float]], scale: float, blur: float
                  ) -> Image.Image:
    """`image` blended towards its darker version `shadowed` under soft shadows of
    `(polygon, height)` pairs, cast towards the bottom right (light from the top left)."""
    # Soft shadows need no detail: drawn and blurred at output resolution, then scaled up.
    mask = Image.new('L', (image.width // SUPERSAMPLE, image.height // SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, height in silhouettes:
        draw.polygon(to_pixels(polygon + height * np.array([0.7, 1.0]), scale / SUPERSAMPLE,
                               MARGIN), fill=255)
    mask = mask.filter(ImageFilter.BoxBlur(blur)).resize(image.size, Image.BILINEAR)
    return Image.composite(shadowed, image, mask)


def _darker(image: Image.Image) -> Image.Image:
    return image.point(lambda level: int(level * (1 - SHADOW_STRENGTH)))


def _arm_and_hand_directions(side: str, palm: np.ndarray, target: np.ndarray, aim: float
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The forearm comes from an elbow below the frame on the hand's side; the fingers point
    along it, turned towards the object by `aim`."""
    along_arm = unit(palm - elbow_anchor(side))
    return along_arm, unit((1 - aim) * along_arm + aim * unit(target - palm))


def _bbox(points: np.ndarray) -> tuple[BBox, float] | None:
    """The box of `points` (frame units, as a camera sees them), clipped to the frame, and the
    fraction of its area that is inside; None when nothing is."""
    low, high = points.min(0), points.max(0)
    clipped_low, clipped_high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    area = np.prod(high - low)
    inside = np.prod(np.maximum(clipped_high - clipped_low, 0))
    if inside <= 0:
        return None
    return BBox(*clipped_low, *clipped_high), float(inside / area)


def render_clip(spec: ActionSpec, seed: int, size: int = 144, fps: float = 15,
                seconds: float = 3.0, miss_rate: float = 0.05, view: str = 'ego'
                ) -> RenderedClip:
    """Renders one clip of `round(seconds * fps)` frames of `size` x `size` pixels, seen by
    the head-mounted camera (`view='ego'`) or by a static camera across the table ('side').

    Deterministic in `(spec, seed, size, fps, seconds, miss_rate, view)`; both views of a seed
    show the same scene and motion and miss the same detections. Each hand and object
    detection is left out of a frame with probability `miss_rate` (as a real detector misses
    some), so tracks need interpolation.
    """
    check_choice(view, VIEWS, 'view')
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
    frames, camera, geometry = _render_frames(scene, motion, spec, rng, num_frames, fps, size,
                                              view)
    detections = _detections(geometry, camera, motion, rng['detections'], miss_rate)
    return RenderedClip(frames, detections, spec, float(fps), scene, view)


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


class _HeadCamera:
    """The head-mounted camera: looks straight down at the table and sways slowly (quantised
    to canvas pixels so boxes match the pixels)."""

    def __init__(self, rng: np.random.Generator, num_frames: int, fps: float, scale: int):
        offsets = _smooth_wave(rng, num_frames, fps, CAMERA_JITTER)
        self._scale = scale
        self._crop_origin = np.round((offsets + MARGIN) * scale).astype(int)
        self._offsets = self._crop_origin / scale - MARGIN
        self._gains = 1 + _smooth_wave(rng, num_frames, fps, 0.04, dims=1)[:, 0]

    def gain(self, t: int) -> float:
        """The exposure of frame `t` (auto-exposure following the head motion)."""
        return self._gains[t]

    def shoot(self, t: int, canvas: Image.Image) -> Image.Image:
        """Frame `t` at the canvas resolution (`scale` pixels a side)."""
        left, top = self._crop_origin[t]
        return canvas.crop((left, top, left + self._scale, top + self._scale))

    def project(self, t: int, points: np.ndarray) -> np.ndarray:
        """Canvas points (frame units) where frame `t` shows them."""
        return points - self._offsets[t]


def _render_frames(scene: Scene, motion: Motion, spec: ActionSpec,
                   rng: dict[str, np.random.Generator], num_frames: int, fps: float, size: int,
                   view: str) -> tuple[np.ndarray, _HeadCamera | SideCamera, _Geometry]:
    """uint8 frames, the camera that took them and the outlines behind the boxes."""
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
        draw_parts(draw, parts, scale, MARGIN)
    background_shadowed = _darker(background)

    if view == 'ego':
        camera = _HeadCamera(rng['camera'], num_frames, fps, scale)
    else:
        camera = SideCamera(table, motion.palm, scene.skin, scene.sleeve, scale, MARGIN,
                            rng['room'])
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
        draw_parts(draw, target_parts, scale, MARGIN)
        for side in HAND_SIDES:
            draw_parts(draw, arms[side], scale, MARGIN)
        for side in HAND_SIDES:
            draw_parts(draw, hands[side], scale, MARGIN)
        image = camera.shoot(t, image).reduce(SUPERSAMPLE)
        bank, dy, dx = noise_picks[t]
        noise = noise_bank[bank, dy:dy + size, dx:dx + size]
        frames[t] = np.clip(np.asarray(image, np.float32) * (vignette * camera.gain(t)) + noise,
                            0, 255).astype(np.uint8)
        geometry.target.append(np.concatenate([part.polygon for part in target_parts]))
        geometry.hands.append({side: np.concatenate([part.polygon for part in hands[side]])
                               for side in HAND_SIDES})
    return frames, camera, geometry


def _detections(geometry: _Geometry, camera: _HeadCamera | SideCamera, motion: Motion,
                rng: np.random.Generator, miss_rate: float) -> list[FrameDetections]:
    """Ground-truth detections per frame as `camera` sees them: visible hands (mostly inside
    the frame) and objects; the target scores highest. Scores and misses come from their own
    stream."""
    num_frames, num_others = len(geometry.target), len(geometry.others)
    hand_scores = rng.uniform(*HAND_SCORES, (num_frames, len(HAND_SIDES)))
    target_scores = rng.uniform(*OBJECT_SCORES, num_frames)
    other_scores = rng.uniform(*DISTRACTOR_SCORES, (num_frames, num_others))
    missed = rng.random((num_frames, len(HAND_SIDES) + 1 + num_others)) < miss_rate
    frames = []
    for t in range(num_frames):
        object_boxes = [_bbox(camera.project(t, points))
                        for points in [geometry.target[t], *geometry.others]]
        objects = [ObjectDetection(box[0], score)
                   for box, score, miss in zip(object_boxes,
                                               [target_scores[t], *other_scores[t]],
                                               missed[t, len(HAND_SIDES):])
                   if box is not None and not miss]
        visible_centers = [np.array(box[0].center) for box in object_boxes if box is not None]
        hands = []
        for index, side in enumerate(HAND_SIDES):
            box = _bbox(camera.project(t, geometry.hands[t][side]))
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


__all__ = ['VIEWS', 'RenderedClip', 'Scene', 'SceneObject', 'render_clip']
