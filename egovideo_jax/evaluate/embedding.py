"""Batched embedding for the evaluators: decode clips on worker threads, pad the last batch
(one compiled shape per run), optionally shard each batch over a mesh, show progress."""
from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from egovideo_jax.media.sampling import sample_eval
from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.model.encoder import Encoder
from egovideo_jax.model.layout import is_scanned, unstack_layers
from egovideo_jax.model.tokenizer import tokenize
from egovideo_jax.parallel.batching import global_batch
from egovideo_jax.parallel.sharding import data_parallel_size
from egovideo_jax.records.schema import decode_frames

Item = TypeVar('Item')


def as_model(model_or_params: Any, model_config: EgoVideoConfig | None = None,
             module: EgoVideo | None = None) -> Encoder:
    """An `Encoder` (e.g. an `egovideo_jax.load` model) as is, or `params` (either layer layout, e.g. a train state's,
    possibly sharded) bound to `model_config`; with `module` (the trainer's), the params stay
    in its layout and run through it (its attention implementation, scan, dtype)."""
    if module is not None:
        return Encoder(module.config, model_or_params, module=module)
    if model_config is None:
        if not isinstance(model_or_params, Encoder):
            raise TypeError('evaluators take an EgoVideoModel, or params together with their '
                            f'EgoVideoConfig; got {type(model_or_params).__name__} alone')
        return model_or_params
    params = model_or_params
    return Encoder(model_config, unstack_layers(params) if is_scanned(params) else params)


def frame_counts(config: EgoVideoConfig, num_frames: int) -> tuple[int, ...]:
    """Frames per video input: slow/fast models take their slow (T0, 4) and fast (16) counts;
    single-branch models the evaluator's configured `num_frames`."""
    if config.mode == 'slowfast':
        return config.vision.num_frames, config.fast_frames
    return (num_frames,)


def _check_batch_size(batch_size: int, mesh: Mesh | None):
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if mesh is not None and batch_size % data_parallel_size(mesh):
        raise ValueError(f'batch_size {batch_size} is not divisible by the mesh\'s data-parallel '
                         f'size {data_parallel_size(mesh)}')


def _padded(arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    batch = np.stack(arrays)
    if len(batch) < batch_size:  # zeros: padded rows are computed, then dropped
        padding = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
        batch = np.concatenate([batch, padding])
    return batch


def _prefetched(load: Callable[[Item], Any], items: Sequence[Item], num_workers: int,
                window: int) -> Iterator[Any]:
    """`load(item)` for each item in order, computed up to `window` items ahead on threads
    (PyAV and Pillow release the GIL while decoding and resizing)."""
    if num_workers <= 0:
        yield from map(load, items)
        return
    pool = ThreadPoolExecutor(num_workers)
    upcoming = iter(items)
    try:
        pending = collections.deque(pool.submit(load, item)
                                    for item in itertools.islice(upcoming, window))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(load, item) for item in itertools.islice(upcoming, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def embed_videos(model: Encoder, items: Sequence[Item],
                 load: Callable[[Item], Sequence[np.ndarray]], batch_size: int,
                 num_workers: int = 4, mesh: Mesh | None = None,
                 desc: str = 'videos', progress: tqdm | None = None) -> np.ndarray:
    """float32 `[len(items), embed]`: `load(item)` gives the model's video inputs for one clip
    (`[frames]` or `[slow, fast]`, each `[T, H, W, 3]`), embedded `batch_size` at a time.

    With a mesh over several processes, each process decodes only its share of every batch
    (`batch_size / process_count` clips), the shares form one global batch on the mesh, and
    every process gets all the embeddings back. `progress`: a bar to advance instead of a
    bar of its own (e.g. one over several calls)."""
    _check_batch_size(batch_size, mesh)
    rank, processes = (jax.process_index(), jax.process_count()) if mesh else (0, 1)
    if batch_size % processes:
        raise ValueError(f'batch_size {batch_size} is not divisible by the {processes} '
                         'processes')
    local_size = batch_size // processes
    batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
    # This process's rows of every batch; None pads a short last batch.
    mine = [chunk[row] if row < len(chunk) else None for chunk in batches
            for row in range(rank * local_size, (rank + 1) * local_size)]
    loaded = _prefetched(lambda item: None if item is None else load(item), mine, num_workers,
                         window=local_size + 2 * num_workers)
    embeddings = []
    own_bar = progress is None
    if own_bar:
        progress = tqdm(total=len(items), desc=desc, unit='clip', smoothing=0.1)
    try:
        for chunk in batches:
            clips = _zero_padded(list(itertools.islice(loaded, local_size)), load, chunk[0])
            branches = [_on_mesh(np.stack(branch), mesh) for branch in zip(*clips)]
            out = _to_host(model.encode_video_array(*branches))
            embeddings.append(np.asarray(out, np.float32)[:len(chunk)])
            progress.update(len(chunk))
    finally:
        if own_bar:
            progress.close()
    if not embeddings:
        return np.zeros((0, model.config.embed_dim), np.float32)
    return np.concatenate(embeddings)


def sampled_frames(clip: dict, count: int, records: str | os.PathLike = '',
                   index: int = -1) -> np.ndarray:
    """uint8 `[count, H, W, 3]`: `count` frames at the centres of equal segments of a decoded
    record clip's stored frames (`records` and `index` name it in errors)."""
    stored = len(clip['frames_jpeg'])
    return decode_frames(clip, sample_eval(0, stored, count), shard=os.fspath(records),
                         index=index)


def _zero_padded(clips: list, load: Callable, first: Item) -> list:
    """Padding rows (None) as zeros shaped like a real clip: computed, then dropped. A
    process whose rows of the last batch are all padding decodes `first` for the shapes."""
    template = next((clip for clip in clips if clip is not None), None)
    if template is None:
        template = load(first)
    return [clip if clip is not None else [np.zeros_like(branch) for branch in template]
            for clip in clips]


def _on_mesh(local: np.ndarray, mesh: Mesh | None):
    """This process's rows of a batch as the batch-sharded global array (as is without a
    mesh)."""
    return local if mesh is None else global_batch({'rows': local}, mesh)['rows']


def _to_host(array: jax.Array) -> np.ndarray:
    """The whole array on this host, gathered from the other processes if needed."""
    if array.is_fully_addressable:
        return np.asarray(array)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def embed_texts(model: Encoder, texts: Sequence[str], batch_size: int,
                desc: str = 'texts') -> np.ndarray:
    """float32 `[len(texts), embed]`: CLIP-tokenised (truncated to the context length).
    Runs unsharded: the text tower is small next to the video tower."""
    _check_batch_size(batch_size, None)
    context_length = model.config.text.context_length
    embeddings = []
    with tqdm(total=len(texts), desc=desc, unit='text', smoothing=0.1) as progress:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            tokens = _padded(list(tokenize(list(chunk), context_length)), batch_size)
            embeddings.append(np.asarray(model.encode_text(tokens), np.float32)[:len(chunk)])
            progress.update(len(chunk))
    if not embeddings:
        return np.zeros((0, model.config.embed_dim), np.float32)
    return np.concatenate(embeddings)
