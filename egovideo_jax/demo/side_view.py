"""The demo source's third-person view: a static camera across the table from the person, at
a low angle. It sees the top-down table canvas that `synthetic.py` draws (table, objects,
hands, shadows) through a perspective map onto a trapezoid in the lower part of the frame,
with the room behind it: a wall with a window, the floor, and the person's torso, head and
upper arms above the table's far edge.

The camera faces the person, so the canvas is mirrored: the person's left hand (canvas left)
appears on the frame's right. The far edge of the table is the canvas bottom, where the
person sits. Frame points are in frame units (x right, y down), as everywhere in the demo.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from egovideo_jax.demo.drawing import Part, capsule, draw_parts, elbow_anchor, ellipse, shade

# Where the canvas corners (top left, top right, bottom right, bottom left) appear: the top
# of the canvas is the near edge, wide and low; the bottom is the far edge, narrow.
TABLE_CORNERS = np.array([(0.97, 0.94), (0.03, 0.94), (0.24, 0.6), (0.76, 0.6)])
FLOOR_LINE = 0.56  # where the wall meets the floor
SHOULDERS = {'left': np.array([0.675, 0.37]), 'right': np.array([0.325, 0.37])}
UPPER_ARM_WIDTHS = (0.07, 0.085)  # at the elbow (about the forearm's width there), shoulder
WALL_COLORS = ((214, 204, 184), (192, 206, 214), (222, 220, 210), (198, 214, 194))
FLOOR_COLORS = ((120, 96, 72), (88, 88, 92), (140, 120, 100))
HAIR_COLORS = ((40, 30, 24), (92, 60, 36), (170, 130, 80), (20, 20, 22))


def homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 projective map that takes the 4 `source` points [4, 2] to `target` [4, 2]."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        values += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(values)), 1.0).reshape(3, 3)


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:]


class SideCamera:
    """Takes the frames of one clip (`gain`, `shoot`, `project`: the interface of synthetic's
    head camera).

    `table` is the bare table canvas (its size sets the table's extent; its colour the front
    of the table), `palms` the palm path of each hand [T, 2] (the upper arms follow them),
    `scale` canvas pixels per frame unit and `margin` the canvas border (frame units).
    """

    def __init__(self, table: Image.Image, palms: dict[str, np.ndarray], skin, sleeve,
                 scale: int, margin: float, rng: np.random.Generator):
        width, height = table.size
        canvas_corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], float)
        self._scale = scale
        self._sleeve = sleeve
        self._table_to_frame = homography(canvas_corners / scale - margin, TABLE_CORNERS)
        # PIL samples the source: its map runs from output pixels to canvas pixels.
        self._warp = tuple(homography(TABLE_CORNERS * scale, canvas_corners).ravel()[:8])
        self._table_mask = Image.new('L', table.size, 255).transform(
            (scale, scale), Image.Transform.PERSPECTIVE, self._warp, Image.Resampling.BILINEAR)
        far_edge = height / scale - margin  # the canvas bottom, on the person's side
        self._elbows = {side: self.project(0, _far_edge_crossing(side, path, far_edge))
                        for side, path in palms.items()}
        self._room = _room(table, skin, sleeve, scale, rng)

    def gain(self, t: int) -> float:
        """The exposure of frame `t`: fixed, the camera and the scene's light do not move."""
        return 1.0

    def shoot(self, t: int, canvas: Image.Image) -> Image.Image:
        """Frame `t` at the canvas resolution (`scale` pixels a side)."""
        image = self._room.copy()
        outline = shade(self._sleeve, -0.35)
        draw_parts(ImageDraw.Draw(image),
                   [Part(capsule(elbows[t], SHOULDERS[side], *UPPER_ARM_WIDTHS), self._sleeve,
                         outline) for side, elbows in self._elbows.items()], self._scale)
        image.paste(canvas.transform(image.size, Image.Transform.PERSPECTIVE, self._warp,
                                     Image.Resampling.BILINEAR), mask=self._table_mask)
        return image

    def project(self, t: int, points: np.ndarray) -> np.ndarray:
        """Canvas points (frame units of the top-down view) where the frame shows them; the
        camera is static, so the same in every frame `t`."""
        return apply_homography(self._table_to_frame, points)


def _far_edge_crossing(side: str, palms: np.ndarray, far_edge: float) -> np.ndarray:
    """[T, 2] where the forearm (from the palm towards its elbow anchor) leaves the table."""
    anchor = elbow_anchor(side)
    along = (far_edge - palms[:, 1:]) / (anchor[1] - palms[:, 1:])
    return palms + np.clip(along, 0, 1) * (anchor - palms)


def _room(table: Image.Image, skin, sleeve, scale: int, rng: np.random.Generator
          ) -> Image.Image:
    """What the camera sees without the table top: wall, window, floor, the front of the
    table, and the person's torso and head (the upper arms move, `shoot` draws them)."""
    wall = np.array(WALL_COLORS[rng.integers(len(WALL_COLORS))], np.float64)
    floor = np.array(FLOOR_COLORS[rng.integers(len(FLOOR_COLORS))], np.float64)
    hair = HAIR_COLORS[rng.integers(len(HAIR_COLORS))]
    window_left = rng.choice([0.05, 0.78])
    rows = (np.arange(scale)[:, None] + 0.5) / scale
    # Lit from above: the wall darkens downwards, the floor darkens towards the camera.
    colors = np.where(rows < FLOOR_LINE, wall * (1.06 - 0.16 * rows),
                      floor * (1.1 - 0.3 * rows))
    image = Image.fromarray(np.broadcast_to(colors[:, None], (scale, scale, 3)).astype(np.uint8))
    near_edge = TABLE_CORNERS[:2]
    parts = [Part(_box(0, FLOOR_LINE - 0.015, 1, 0.015), shade(wall, -0.3)),  # skirting board
             Part(_box(window_left, 0.08, 0.17, 0.3), shade(wall, 0.6)),  # window frame
             Part(_box(window_left + 0.015, 0.095, 0.14, 0.27), (176, 206, 232)),  # sky
             Part(np.concatenate([near_edge, near_edge[::-1] + [0, 0.2]]),  # front of the table
                  shade(np.asarray(table).reshape(-1, 3).mean(0), -0.45)),
             *_person(skin, sleeve, hair)]
    draw_parts(ImageDraw.Draw(image), parts, scale)
    return image


def _person(skin, sleeve, hair) -> list[Part]:
    """Torso, neck and head of the person sitting behind the table, facing the camera and
    looking down at the table; the table hides the torso's lower part."""
    torso = np.array([(0.29, 0.41), (0.36, 0.36), (0.64, 0.36), (0.71, 0.41), (0.69, 0.8),
                      (0.31, 0.8)])
    skin_outline = shade(skin, -0.3)
    eyes = [Part(_oval((0.5 + dx, 0.24), 0.009, 0.006), shade(skin, -0.7))
            for dx in (-0.024, 0.024)]
    return [Part(torso, sleeve, shade(sleeve, -0.35)),
            Part(capsule(np.array([0.5, 0.37]), np.array([0.5, 0.29]), 0.06), skin,
                 skin_outline),  # neck
            Part(_oval((0.5, 0.215), 0.066, 0.075), hair),
            Part(_oval((0.5, 0.235), 0.06, 0.075), skin, skin_outline),  # face
            *eyes,
            Part(_oval((0.5, 0.185), 0.064, 0.03), hair)]  # fringe


def _box(left: float, top: float, width: float, height: float) -> np.ndarray:
    return np.array([(left, top), (left + width, top), (left + width, top + height),
                     (left, top + height)])


def _oval(center, half_width: float, half_height: float) -> np.ndarray:
    return ellipse(np.asarray(center), half_width, half_height, np.array([1.0, 0.0]),
                   np.array([0.0, 1.0]))


__all__ = ['SideCamera', 'apply_homography', 'homography']
