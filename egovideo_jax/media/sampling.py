"""Segment frame sampler with the reference (LaViLa / EgoVideo) semantics.

`n` frames are drawn from positions `[start, end)`: the range is cut into `n` segments and
training takes a uniform integer inside each segment, evaluation its middle.
"""
from __future__ import annotations

import numpy as np


def segment_bounds(start: int, end: int, n: int) -> list[tuple[int, int]]:
    """The `n` inclusive segments `(s, e)` over frames `[start, end)`.

    `seg = (end - start - 1) / n`; boundaries are rounded half to even (Python's `round`, as
    the reference's `np.round`). Clips shorter than `n` frames give repeated positions.
    """
    if n < 1:
        raise ValueError(f'number of frames to sample must be >= 1, got n={n}')
    if end <= start:
        raise ValueError(f'empty frame range: start={start} must be < end={end}')
    seg = (end - start - 1) / n
    bounds = []
    for i in range(n):
        s = int(round(seg * i) + start)
        e = int(round(seg * (i + 1)) + start)
        bounds.append((min(s, end - 1), min(e, end)))
    return bounds


def sample_eval(start: int, end: int, n: int) -> np.ndarray:
    """Deterministic indices: the middle `(s + e) // 2` of each segment."""
    return np.array([(s + e) // 2 for s, e in segment_bounds(start, end, n)], dtype=np.int64)


def sample_train(start: int, end: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Jittered indices: a uniform integer in `[s, e]` (both inclusive) of each segment."""
    lows, highs = np.array(segment_bounds(start, end, n), dtype=np.int64).T
    return rng.integers(lows, highs, endpoint=True).astype(np.int64)
