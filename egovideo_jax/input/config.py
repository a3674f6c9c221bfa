"""`DataConfig`: what the input pipeline reads and how it samples, augments and batches,
with every field checked on construction."""
from __future__ import annotations

import dataclasses

MODES = ('single', 'slowfast')  # the model's modes: one 4-frame branch, or + the fast branch
TEXT_FIELDS = ('hod', 'narration', 'mixed', 'caption')
LABEL_NAMES = ('verb', 'noun', 'action')  # records/schema.py's label block
ON_ERROR = ('fail', 'skip')


@dataclasses.dataclass(frozen=True)
class DataConfig:
    path: str  # dataset directory (records + manifest)
    batch_size: int  # global: over all hosts
    num_frames: int = 4  # slow branch
    fast_frames: int = 16  # fast branch, mode 'slowfast' only
    mode: str = 'slowfast'
    crop_size: int = 224
    # 'hod': training draws one HOD narration per use, evaluation takes the first; clips
    # without one use their narration (counted as text fallbacks). 'narration': the original
    # narration. 'mixed': training draws uniformly from the narration and the HOD narrations,
    # evaluation takes the narration. 'caption' (MIR fine-tuning): training draws one of the
    # clip's relevancy-ranked captions with relevancy > caption_threshold (LaViLa, AVION),
    # evaluation takes the first; clips without captions use their narration (counted as
    # text fallbacks). Narrations lose Ego4D's leading '#C ' tag.
    text_field: str = 'hod'
    caption_threshold: float = 0.1
    # Label-block entries each example carries as `label_{name}` (int32, -1 when the clip
    # has none), e.g. ('verb', 'noun', 'action') for classification fine-tuning.
    labels: tuple[str, ...] = ()
    flip_swaps_sides: bool = True  # False: the reference (flip pixels, keep text and tracks)
    worker_count: int = 0  # Grain worker processes; 0 decodes in the main process
    read_threads: int = 4  # threads decoding inside each worker (or the main process)
    prefetch: int = 2  # batches prepared ahead of the consumer
    on_error: str = 'fail'  # bad record: 'fail', or 'skip' and count
    max_skip_fraction: float = 0.01  # 'skip' fails the run past this fraction of records
    seed: int = 0
    tokenizer: str = 'clip'  # 'clip' or a SentencePiece *.model path

    def __post_init__(self):
        choices = {'mode': MODES, 'text_field': TEXT_FIELDS, 'on_error': ON_ERROR}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f'DataConfig.{name} must be one of {allowed}, '
                                 f'got {getattr(self, name)!r}')
        for name in ('batch_size', 'num_frames', 'fast_frames', 'crop_size', 'read_threads'):
            if getattr(self, name) < 1:
                raise ValueError(f'DataConfig.{name} must be >= 1, got {getattr(self, name)}')
        for name in ('worker_count', 'prefetch'):
            if getattr(self, name) < 0:
                raise ValueError(f'DataConfig.{name} must be >= 0, got {getattr(self, name)}')
        unknown = sorted(set(self.labels) - set(LABEL_NAMES))
        if unknown:
            raise ValueError(f'DataConfig.labels: unknown {unknown}; choose from {LABEL_NAMES}')
        if not 0.0 <= self.caption_threshold < 1.0:
            raise ValueError(f'DataConfig.caption_threshold must be in [0, 1), '
                             f'got {self.caption_threshold}')
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f'DataConfig.max_skip_fraction must be in [0, 1], '
                             f'got {self.max_skip_fraction}')
