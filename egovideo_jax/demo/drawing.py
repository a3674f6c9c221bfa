"""The drawing of the procedural demo source: objects and hands seen from above as filled
polygons (`Part`s) in frame units (x right, y down), the vector helpers they are built with,
and `draw_parts`, which rasterises them (`synthetic.py`, `side_view.py`).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import ImageDraw

HAND_SIZE = 1.45  # scales the hand drawing (`hand_parts` measures a unit hand)


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    """Clockwise on screen for a positive angle (y points down)."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


@functools.cache
def _unit_arc(start: float, stop: float, points: int, endpoint: bool) -> tuple[np.ndarray, ...]:
    """`(cos, sin)` columns [points, 1] of angles from `start` to `stop` (shared, read-only)."""
    angles = np.linspace(start, stop, points, endpoint=endpoint)[:, None]
    return np.cos(angles), np.sin(angles)


def ellipse(center, axis_u, axis_v, u, v, points: int = 20) -> np.ndarray:
    cos, sin = _unit_arc(0, 2 * np.pi, points, False)
    return center + axis_u * cos * u + axis_v * sin * v


def _circle(center, radius, points: int = 20) -> np.ndarray:
    return ellipse(center, radius, radius, np.array([1.0, 0.0]), np.array([0.0, 1.0]), points)


def capsule(start, end, width_start, width_end=None, points: int = 6) -> np.ndarray:
    """A stadium from `start` to `end` (widths at each end; tapered when they differ)."""
    width_end = width_start if width_end is None else width_end
    along = unit(np.asarray(end, np.float64) - start)
    across = np.array([-along[1], along[0]])
    cos, sin = _unit_arc(-np.pi / 2, np.pi / 2, points, True)
    cap_end = end + (cos * along + sin * across) * width_end / 2
    cap_start = start - (cos * along + sin * across) * width_start / 2
    return np.concatenate([cap_end, cap_start])


def _rectangle(center, half_length, half_width, angle, chamfer: float = 0.0) -> np.ndarray:
    along = rotate(np.array([1.0, 0.0]), angle)
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


def shade(color, amount: float) -> tuple[int, int, int]:
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


def to_pixels(polygon: np.ndarray, scale: float, margin: float = 0.0
              ) -> list[tuple[float, float]]:
    """`polygon`'s points in an image of `scale` pixels per frame unit whose top left corner
    is `margin` frame units above and left of the frame's."""
    return [tuple(point) for point in ((polygon + margin) * scale).tolist()]


def draw_parts(draw: ImageDraw.ImageDraw, parts: list[Part], scale: float,
               margin: float = 0.0) -> None:
    """Fills `parts` in order (pixels as `to_pixels`)."""
    for part in parts:
        draw.polygon(to_pixels(part.polygon, scale, margin), fill=part.fill,
                     outline=part.outline)


def elbow_anchor(side: str) -> np.ndarray:
    """Where the forearm of the `side` hand comes from: below the frame (the person sits
    there) on the hand's side."""
    return np.array([0.05 if side == 'left' else 0.95, 1.45])


def object_parts(kind: str, color, center, radius: float, angle: float) -> list[Part]:
    """The polygons of one object seen from above, drawn in order; the first one is the
    silhouette that casts the shadow."""
    center = np.asarray(center, np.float64)
    dark, light = shade(color, -0.4), shade(color, 0.45)
    along = rotate(np.array([1.0, 0.0]), angle)
    across = np.array([-along[1], along[0]])
    if kind == 'cup':
        handle = capsule(center + along * 0.8 * radius, center + along * 1.45 * radius,
                          0.38 * radius)
        # The rim comes first as the silhouette and again over the handle's inner end.
        return [Part(_circle(center, radius), color, dark), Part(handle, color, dark),
                Part(_circle(center, radius), color, dark),
                Part(_circle(center, 0.74 * radius), shade(color, -0.55)),
                Part(_circle(center - 0.2 * radius, 0.25 * radius), shade(color, -0.35))]
    if kind == 'bottle':
        body = capsule(center - along * 1.05 * radius, center + along * 0.55 * radius,
                        1.0 * radius)
        neck = capsule(center + along * 0.55 * radius, center + along * 1.15 * radius,
                        0.5 * radius)
        label = _rectangle(center - along * 0.2 * radius, 0.38 * radius, 0.5 * radius, angle)
        shine = capsule(center - along * 0.9 * radius - across * 0.25 * radius,
                         center + along * 0.4 * radius - across * 0.25 * radius, 0.14 * radius)
        return [Part(body, color, dark), Part(neck, color, dark), Part(label, light),
                Part(shine, shade(color, 0.6)),
                Part(_circle(center + along * 1.2 * radius, 0.3 * radius), (235, 235, 230),
                     (150, 150, 150))]
    if kind == 'box':
        tape = _rectangle(center, 0.85 * radius, 0.16 * radius, angle)
        return [Part(_rectangle(center, 0.85 * radius, 0.68 * radius, angle), color, dark),
                Part(tape, light),
                Part(_rectangle(center, 0.85 * radius, 0.02 * radius, angle), dark)]
    if kind == 'ball':
        seam = capsule(center - along * 0.8 * radius, center + along * 0.8 * radius,
                        0.12 * radius)
        return [Part(_circle(center, 0.85 * radius), color, dark), Part(seam, dark),
                Part(_circle(center - 0.3 * radius, 0.2 * radius), shade(color, 0.6))]
    if kind == 'sponge':
        body = _rectangle(center, 0.95 * radius, 0.6 * radius, angle, chamfer=0.18 * radius)
        scrub = _rectangle(center + along * 0.48 * radius, 0.47 * radius, 0.6 * radius, angle)
        pores = [Part(_circle(center + along * dx * radius + across * dy * radius,
                              0.09 * radius, 6), dark)
                 for dx, dy in ((-0.6, -0.3), (-0.3, 0.25), (-0.7, 0.3), (-0.2, -0.25))]
        return [Part(body, color, dark), Part(scrub, shade(color, -0.3), dark), *pores]
    raise ValueError(f'kind: unknown {kind!r}')


def hand_parts(side: str, palm: np.ndarray, forward: np.ndarray, arm_direction: np.ndarray,
               grip: float, skin, sleeve) -> tuple[list[Part], list[Part]]:
    """`(arm parts, hand parts)` of a hand seen from above, palm down, fingers along
    `forward`, forearm along `arm_direction`; the thumb is on the inner side (the right of a
    left hand). The last hand part is a highlight, not part of the silhouette."""
    forward = unit(forward)
    thumb_side = 1.0 if side == 'left' else -1.0  # +1: the thumb is to the right of `forward`
    inward = np.array([-forward[1], forward[0]]) * thumb_side

    def at(ahead: float, towards_thumb: float) -> np.ndarray:
        return palm + (forward * ahead + inward * towards_thumb) * HAND_SIZE

    def size(value: float) -> float:
        return value * HAND_SIZE

    outline = shade(skin, -0.3)
    wrist = at(-0.032, 0)
    elbow = wrist - unit(arm_direction) * 0.5
    sleeve_start = wrist + (elbow - wrist) * 0.4
    arm = [Part(capsule(wrist, elbow, size(0.062), size(0.08)), skin, outline),
           Part(capsule(sleeve_start, elbow + (elbow - wrist), size(0.082), size(0.1)), sleeve,
                shade(sleeve, -0.35))]
    hand = [Part(ellipse(palm, size(0.043), size(0.037), forward, inward), skin, outline)]
    finger_color = shade(skin, -0.1 * grip)  # curled fingers catch less light
    # index .. little finger: offset from the palm axis, splay (radians), length
    for towards_thumb, splay, length in ((0.024, 0.14, 0.042), (0.008, 0.04, 0.047),
                                         (-0.008, -0.06, 0.044), (-0.024, -0.17, 0.034)):
        base = at(0.028, towards_thumb)
        direction = rotate(forward, thumb_side * splay * (1 - grip))
        tip = base + direction * size(length) * (1 - 0.55 * grip)
        hand.append(Part(capsule(base, tip, size(0.017), size(0.015)), finger_color, outline))
    thumb_base = at(-0.006, 0.026)
    thumb_direction = rotate(forward, thumb_side * (1.0 - 0.55 * grip))
    hand.append(Part(capsule(thumb_base, thumb_base + thumb_direction * size(0.04) *
                             (1 - 0.3 * grip), size(0.021), size(0.017)), skin, outline))
    highlight = palm + np.array([-0.007, -0.007]) * HAND_SIZE  # towards the light
    hand.append(Part(ellipse(highlight, size(0.02), size(0.015), forward, inward, 12),
                     shade(skin, 0.12)))
    return arm, hand


__all__ = ['HAND_SIZE', 'Part', 'capsule', 'draw_parts', 'elbow_anchor', 'ellipse', 'hand_parts',
           'object_parts', 'rotate', 'shade', 'to_pixels', 'unit']
