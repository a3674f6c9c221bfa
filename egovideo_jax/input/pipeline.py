"""The Grain input pipeline: HOD clip records -> augmented, tokenised examples -> batches.

`make_dataset` (a `grain.MapDataset`, random access, cheap index operations first):
  global record indices -> shuffle by seed (train; reseeded every epoch by `repeat`)
  -> this host's slice (host i of n takes positions i, i+n, ...) -> repeat (train)
  -> read, decode, sample, augment, tokenise (`ClipExampleMaker`).
`make_iterator` runs that in `read_threads` threads of `worker_count` worker processes,
  counts and drops skipped records in the main process, batches, and prefetches batches in
  a thread. Its state (`get_state`, a small JSON-able dict) is the position in the host's
  stream plus the counts, so `set_state` resumes with the exact next batch, whatever the
  worker count.

Every random choice of an example comes from `np.random.default_rng([seed, epoch, index])`
(global record index), so examples depend neither on the worker count nor on resumption.
Draw order: slow positions, fast positions, HOD text, flip, slow crop, fast crop; one flip
per clip, shared by both branches and the text.

Bad records (`RecordError`: CRC, truncation, schema, undecodable JPEG) either fail the run
naming shard and record (`on_error='fail'`) or are skipped and counted (`'skip'`); the run
fails once more than `max_skip_fraction` of the records seen were skipped, judged after
`MIN_RECORDS_FOR_SKIP_LIMIT` records or one epoch of this host, whichever comes first.

What to read and how is a `DataConfig` (input/config.py); the clip's text is cleaned and
tokenised by input/text.py.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import grain
import numpy as np
from absl import flags, logging

from egovideo_jax.input import augment
from egovideo_jax.input.config import DataConfig
from egovideo_jax.input.source import ClipRecordSource
from egovideo_jax.input.text import clean_narration, tokenize
from egovideo_jax.media import sampling, transforms
from egovideo_jax.records import schema
from egovideo_jax.records.tfrecord import RecordError

# The skip fraction is judged once this many records (or a whole epoch of this host, if
# smaller) were seen, so one bad record early in a run does not end it.
MIN_RECORDS_FOR_SKIP_LIMIT = 100
MAX_SKIP_REASONS_KEPT = 100


class SkippedRecord(NamedTuple):
    """What `make_dataset` yields for a bad record under `on_error='skip'`."""
    index: int
    reason: str


class SkipLimitExceeded(RuntimeError):
    """More records were skipped than `max_skip_fraction` allows."""


@dataclasses.dataclass
class InputStats:
    """Counts of this host's input so far (part of the iterator state)."""
    seen: int = 0  # records read, good or bad
    skipped: int = 0
    text_fallbacks: int = 0  # text_field 'hod'/'caption' but the clip had none: narration
    skip_reasons: list[str] = dataclasses.field(default_factory=list)  # the first ones

    @property
    def skipped_fraction(self) -> float:
        return self.skipped / self.seen if self.seen else 0.0


class ClipExampleMaker:
    """Global record index (at a position of the host's stream) -> one training example:
    `slow` float32 [num_frames, S, S, 3], `fast` float32 [fast_frames, S, S, 3] (slowfast),
    `tokens` int32 [77], `index` int64, and `text_fallback` bool for the accounting stage;
    with `text_field='caption'` also `weight` float32 (the drawn caption's relevancy, 1 for a
    fallback), and `label_{name}` int32 for every name in `config.labels` (-1: no label).
    """

    def __init__(self, source: ClipRecordSource, config: DataConfig, *, train: bool,
                 seed: int, epoch_length: int):
        self.source = source
        self.config = config
        self.train = train
        self.seed = seed
        self.epoch_length = epoch_length

    def __call__(self, position: int, record_index: int) -> dict | SkippedRecord:
        epoch = position // self.epoch_length if self.train else 0
        try:
            return self.make(int(record_index), epoch)
        except RecordError as error:
            if self.config.on_error == 'fail':
                raise
            return SkippedRecord(int(record_index), str(error))

    def make(self, record_index: int, epoch: int) -> dict:
        config = self.config
        record = self.source[record_index]
        where = {'shard': record.shard, 'index': record.shard_index}
        clip = schema.decode_clip(record.data, **where)
        stored = len(clip['frames_jpeg'])
        if stored == 0:
            raise RecordError(record.shard, record.shard_index, "feature 'frames/jpeg': no frames")
        rng = np.random.default_rng([self.seed, epoch, record_index])

        branches = {'slow': self._positions(stored, config.num_frames, rng)}
        if config.mode == 'slowfast':
            branches['fast'] = self._positions(stored, config.fast_frames, rng)
        needed = np.unique(np.concatenate(list(branches.values())))
        decoded = schema.decode_frames(clip, needed.tolist(), **where)
        text, weight, text_fallback = self._text(clip, rng)
        flip = self.train and rng.random() < 0.5
        if flip and config.flip_swaps_sides:
            text = augment.swap_sides(text)

        example = {}
        for name, positions in branches.items():
            frames = decoded[np.searchsorted(needed, positions)]
            if self.train:
                frames = augment.random_resized_crop(frames, config.crop_size, rng)
                if flip:
                    frames = augment.hflip(frames)
            else:
                frames = augment.center_crop(frames, config.crop_size)
            example[name] = transforms.normalize(frames)
        example['tokens'] = tokenize(text, config.tokenizer)
        if config.text_field == 'caption':
            example['weight'] = np.float32(weight)
        for name in config.labels:
            example[f'label_{name}'] = np.int32(clip['labels'].get(name, -1))
        example['index'] = np.int64(record_index)
        example['text_fallback'] = np.bool_(text_fallback)
        return example

    def _positions(self, stored: int, count: int, rng: np.random.Generator) -> np.ndarray:
        if self.train:
            return sampling.sample_train(0, stored, count, rng)
        return sampling.sample_eval(0, stored, count)

    def _text(self, clip: dict, rng: np.random.Generator) -> tuple[str, float, bool]:
        """The text to train on, its relevancy weight and whether it fell back to the
        clip's narration (no HOD narration or caption to draw from)."""
        narration = clean_narration(clip['narration'])
        field = self.config.text_field
        if field == 'narration':
            return narration, 1.0, False
        if field == 'caption':
            relevant = np.flatnonzero(clip['caption_relevancy'] > self.config.caption_threshold)
            if not len(relevant):
                return narration, 1.0, True
            choice = int(relevant[rng.integers(len(relevant))]) if self.train else int(relevant[0])
            return (clean_narration(clip['captions'][choice]),
                    float(clip['caption_relevancy'][choice]), False)
        if not clip['hod']:
            return narration, 1.0, True
        candidates = clip['hod'] if field == 'hod' else [narration, *clip['hod']]
        choice = int(rng.integers(len(candidates))) if self.train else 0
        return candidates[choice], 1.0, False


def _records_per_host(total: int, train: bool, process_index: int, process_count: int,
                      path: str) -> int:
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} is not in [0, {process_count})')
    if train:
        # Equal epochs on every host keep them in the same epoch at every step; the records
        # left over differ per epoch (they follow the shuffle), so none is always left out.
        per_host = total // process_count
    else:
        per_host = len(range(process_index, total, process_count))
    if per_host == 0:
        raise ValueError(f'dataset {path} has {total} records, too few for '
                         f'{process_count} hosts')
    return per_host


def make_dataset(data_config: DataConfig, *, train: bool, seed: int | None = None,
                 process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """This host's examples as a `grain.MapDataset` (infinite when `train`).

    Elements are `ClipExampleMaker` dicts, or `SkippedRecord` for bad records under
    `on_error='skip'` (`make_iterator` counts and drops those). `seed` defaults to
    `data_config.seed`. Evaluation reads every record once, in order, hosts splitting
    them i, i+n, ...; training drops `len % process_count` records per epoch.
    """
    return _host_stream(data_config, train, seed, process_index, process_count).examples


class _HostStream(NamedTuple):
    examples: grain.MapDataset
    epoch_length: int  # records per epoch on this host
    identity: dict  # what fixes the order of `examples`; a saved position needs the same


def _host_stream(config: DataConfig, train: bool, seed: int | None, process_index: int,
                 process_count: int) -> _HostStream:
    seed = config.seed if seed is None else seed
    source = ClipRecordSource(config.path)
    total = len(source)
    per_host = _records_per_host(total, train, process_index, process_count, config.path)
    records = grain.MapDataset.range(total)
    if train:
        records = records.shuffle(seed=seed)
    records = records[process_index::process_count][:per_host]
    if train:
        records = records.repeat(None)
    maker = ClipExampleMaker(source, config, train=train, seed=seed, epoch_length=per_host)
    identity = {'records': total, 'train': train, 'seed': seed,
                'process_index': process_index, 'process_count': process_count}
    return _HostStream(records.map_with_index(maker), per_host, identity)


class _ExampleStream(grain.IterDataset):
    """`examples` decoded by Grain threads and worker processes, with `SkippedRecord`s
    counted and dropped (failing the run past `max_skip_fraction`) in the main process.

    Its state is the number of examples consumed (plus the counts), not Grain's per-worker
    state, so a run can resume with another `worker_count` or `read_threads`: `set_state`
    restarts the workers at that position.
    """

    def __init__(self, examples: grain.MapDataset, identity: dict, config: DataConfig,
                 in_flight: int, min_records: int):
        super().__init__()
        self.examples = examples
        self.identity = identity
        self.config = config
        self.in_flight = in_flight
        self.min_records = min_records

    def open(self, position: int) -> grain.DatasetIterator:
        """A Grain iterator over the examples from `position` on."""
        examples = self.examples[position:] if position else self.examples
        stream = examples.to_iter_dataset(grain.ReadOptions(
            num_threads=self.config.read_threads, prefetch_buffer_size=self.in_flight))
        if self.config.worker_count:
            # Grain's worker machinery reads its absl flags; outside an absl app (notebooks,
            # tests) nobody parsed them, so take their defaults rather than fail.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.config.worker_count, per_worker_buffer_size=self.in_flight))
        return iter(stream)

    def __iter__(self) -> _ExampleStreamIterator:
        return _ExampleStreamIterator(self)


class _ExampleStreamIterator(grain.DatasetIterator):

    def __init__(self, stream: _ExampleStream):
        super().__init__()
        self._stream = stream
        self._counts = InputStats()
        self._examples = None  # opened on first use, so a restored iterator starts only once

    def __next__(self) -> dict:
        if self._closed:
            raise ValueError('the input iterator is closed')
        if self._examples is None:
            self._examples = self._stream.open(self._counts.seen)
        while True:
            element = next(self._examples)
            counts = self._counts
            counts.seen += 1
            if isinstance(element, SkippedRecord):
                counts.skipped += 1
                if len(counts.skip_reasons) < MAX_SKIP_REASONS_KEPT:
                    counts.skip_reasons.append(element.reason)
                    logging.warning('skipped record %d (%d of %d so far): %s', element.index,
                                    counts.skipped, counts.seen, element.reason)
            self._check_skip_limit()
            if not isinstance(element, SkippedRecord):
                element = dict(element)
                counts.text_fallbacks += int(element.pop('text_fallback'))
                return element

    def _check_skip_limit(self) -> None:
        counts = self._counts
        limit = self._stream.config.max_skip_fraction
        if counts.seen >= self._stream.min_records and counts.skipped_fraction > limit:
            shown = '\n  '.join(counts.skip_reasons[:5])
            raise SkipLimitExceeded(
                f'skipped {counts.skipped} of {counts.seen} records '
                f'({counts.skipped_fraction:.2%}), more than max_skip_fraction={limit:.2%}; '
                f'first reasons:\n  {shown}')

    def get_state(self) -> dict:
        # `stats.seen` is also the position: every example consumed, skipped or not.
        return {'stream': dict(self._stream.identity), 'stats': dataclasses.asdict(self._counts)}

    def set_state(self, state: dict) -> None:
        saved, expected = state['stream'], self._stream.identity
        differing = sorted(key for key in expected if saved.get(key) != expected[key])
        if differing:
            raise ValueError(
                'the input iterator state was saved for another stream: '
                + ', '.join(f'{key} {saved.get(key)!r} (now {expected[key]!r})'
                            for key in differing))
        stats = dict(state['stats'])
        self._counts = InputStats(**{**stats, 'skip_reasons': list(stats['skip_reasons'])})
        self._close_examples()

    def start_prefetch(self) -> None:
        if self._examples is None:
            self._examples = self._stream.open(self._counts.seen)
        self._examples.start_prefetch()

    def _close_examples(self) -> None:
        if self._examples is not None:
            self._examples.close()
            self._examples = None

    def close(self) -> None:
        self._close_examples()
        super().close()


def make_iter_dataset(data_config: DataConfig, *, train: bool, seed: int | None = None,
                      process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Batches of this host's share of `data_config.batch_size` (drop_remainder in training);
    neither the batches nor the saved state depend on `worker_count`."""
    if data_config.batch_size % process_count:
        raise ValueError(f'DataConfig.batch_size={data_config.batch_size} is not divisible by '
                         f'the {process_count} hosts')
    local_batch = data_config.batch_size // process_count
    host = _host_stream(data_config, train, seed, process_index, process_count)
    # Examples in flight per process: `prefetch` batches' worth, split over the workers, and
    # at least one per decoding thread.
    in_flight = max(data_config.read_threads,
                    data_config.prefetch * local_batch // max(1, data_config.worker_count))
    stream = _ExampleStream(host.examples, host.identity, data_config, in_flight,
                            min(MIN_RECORDS_FOR_SKIP_LIMIT, host.epoch_length))
    batches = stream.batch(local_batch, drop_remainder=train)
    if data_config.prefetch:
        batches = grain.experimental.ThreadPrefetchIterDataset(
            batches, prefetch_buffer_size=data_config.prefetch)
    return batches


def make_iterator(data_config: DataConfig, *, train: bool, seed: int | None = None,
                  process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
    """An iterator over `make_iter_dataset`; checkpoint it with `get_state`/`set_state`
    (a small JSON-able dict) or Grain's Orbax handler. Close it to stop the workers."""
    return iter(make_iter_dataset(data_config, train=train, seed=seed,
                                  process_index=process_index, process_count=process_count))


def input_stats(iterator) -> InputStats:
    """Counts up to the last batch `iterator` (a Grain iterator of `make_iterator`, or a
    `batching.DevicePrefetcher` around one) returned; prefetched batches are not included."""
    state = iterator.state() if hasattr(iterator, 'state') else iterator.get_state()
    return InputStats(**state['stats'])
