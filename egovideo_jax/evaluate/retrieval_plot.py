"""`retrievals.png`, the figure the retrieval benchmarks write: a few text queries, each with
its top-5 clips as frame strips, titled with their relevancy to the query (relevant clips in
green, the others in red)."""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from egovideo_jax.media.transforms import resize_short_side_center_crop

STRIP_FRAMES, STRIP_SIZE, TOP_K = 4, 96, 5
RELEVANT, NOT_RELEVANT = '#1a7f37', '#c62828'


def frame_strip(frames: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 frames side by side, centre-cropped to STRIP_SIZE squares."""
    gap = np.full((STRIP_SIZE, 2, 3), 255, np.uint8)  # white line between frames
    tiles = [part for frame in frames
             for part in (resize_short_side_center_crop(frame, STRIP_SIZE), gap)]
    return np.concatenate(tiles[:-1], axis=1)


def plot_retrievals(path: Path, similarity: np.ndarray, relevancy: np.ndarray,
                    queries: Sequence[str], num_examples: int,
                    strip: Callable[[int], np.ndarray], label: Callable[[int], str]):
    """Text -> video examples from `similarity` and `relevancy` (`[clips, queries]`):
    `num_examples` queries spread evenly over `queries` (the columns' texts), each with its
    top-5 clips, drawn as `strip(clip)` and titled `label(clip)` and their relevancy."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    columns = np.unique(np.linspace(0, len(queries) - 1, min(num_examples, len(queries)))
                        .round().astype(int))
    figure = Figure(figsize=(3.2 * TOP_K, 1.6 * len(columns)), layout='constrained')
    for row, column in zip(figure.subfigures(len(columns), 1, squeeze=False)[:, 0], columns):
        row.suptitle(textwrap.shorten(f'"{queries[column]}"', 120), fontsize=10, ha='left',
                     x=0.01)
        ranked = np.argsort(-similarity[:, column], kind='stable')[:TOP_K]
        for rank, (axes, clip) in enumerate(zip(row.subplots(1, TOP_K), ranked), 1):
            relevance = relevancy[clip, column]
            axes.imshow(strip(clip))
            axes.set_title(f'{rank}. {label(clip)} rel {relevance:.2f}', fontsize=8,
                           color=RELEVANT if relevance > 0 else NOT_RELEVANT)
            axes.set_axis_off()
    figure.savefig(path, dpi=80)
