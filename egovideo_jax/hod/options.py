"""What a HOD pipeline run is made with, and the checks of it: `PipelineOptions` (what decides
the content of a clip's record) and `NarratorSpec` (how to build the narrator where it runs).

Both check their values when built and raise `OptionError` naming the field; `check_runnable`
adds what only this machine can tell (directories, files, optional packages). The command line
maps the fields to its config keys.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Collection

from egovideo_jax.hod import detection_sources, detectors
from egovideo_jax.hod.detections import DEFAULT_HAND_THRESHOLD, DEFAULT_OBJECT_THRESHOLD
from egovideo_jax.hod.narrators import Narrator, available_narrators, make_narrator
from egovideo_jax.hod.narrators.validated import ValidatedNarrator
from egovideo_jax.io.choices import check_choice
from egovideo_jax.records import convert_csv

DETECTION_SOURCES = (*detection_sources.DETECTION_SOURCES, 'detector')  # files, or live
DETECTOR_PACKAGES = {'mediapipe': 'mediapipe', 'onnx': 'onnxruntime'}
MIN_SHORT_SIDE = 16


class OptionError(ValueError):
    """An option that cannot be used: `field` names it (`detection_root`,
    `options.base_url`), `reason` says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f'{field}: {reason}')
        self.field, self.reason = field, reason


def _require(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise OptionError(field, reason)


def _require_choice(value, choices: Collection, field: str) -> None:
    try:
        check_choice(value, choices, field)
    except ValueError as error:
        raise OptionError(field, str(error).removeprefix(f'{field}: ')) from None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What decides the content of a clip's record (and so the resume check)."""
    video_root: str
    detection_source: str = 'epic'  # one of DETECTION_SOURCES
    detection_root: str = ''  # the files of `epic` / `jsonl`
    detection_fps: float = 0.0  # frame rate the detection files count frames at; 0: the video's
    detector: str = 'mediapipe'  # `detector` source: a `detectors.FRAME_DETECTORS` name
    detector_options: tuple[tuple[str, object], ...] = ()
    hand_threshold: float = DEFAULT_HAND_THRESHOLD
    object_threshold: float = DEFAULT_OBJECT_THRESHOLD
    smoothing: int = 0
    frames_per_clip: int = 32
    short_side: int = 256
    chunk_seconds: float = 15.0
    jpeg_quality: int = 90
    default_source: str = convert_csv.DEFAULT_SOURCE

    def __post_init__(self):
        _require_choice(self.detection_source, DETECTION_SOURCES, 'detection_source')
        if self.detection_source == 'detector':
            _require_choice(self.detector, detectors.FRAME_DETECTORS, 'detector')
        for field in ('hand_threshold', 'object_threshold'):
            value = getattr(self, field)
            _require(0 <= value <= 1, field, f'expected a score in [0, 1], got {value}')
        _require(self.detection_fps >= 0, 'detection_fps',
                 f"expected >= 0 (0: the video's), got {self.detection_fps}")
        _require(self.smoothing == 0 or (self.smoothing > 0 and self.smoothing % 2 == 1),
                 'smoothing', f'expected 0 (off) or an odd window, got {self.smoothing}')
        _require(self.frames_per_clip >= 1, 'frames_per_clip',
                 f'expected >= 1, got {self.frames_per_clip}')
        _require(self.short_side >= MIN_SHORT_SIDE, 'short_side',
                 f'expected >= {MIN_SHORT_SIDE}, got {self.short_side}')
        _require(self.chunk_seconds > 0, 'chunk_seconds',
                 f'expected > 0, got {self.chunk_seconds}')


@dataclasses.dataclass(frozen=True)
class NarratorSpec:
    """How to build the narrator where it runs (worker processes, Beam workers): `name` and
    `options` for `narrators.make_narrator`, `retries` for `ValidatedNarrator`."""
    name: str = 'rules'
    options: tuple[tuple[str, object], ...] = ()
    retries: int = 1

    def __post_init__(self):
        _require_choice(self.name, available_narrators(), 'name')
        _require(self.retries >= 0, 'retries', f'expected >= 0, got {self.retries}')
        options = dict(self.options)
        if 'max_concurrency' in options:
            _require(options['max_concurrency'] >= 1, 'options.max_concurrency',
                     f'expected >= 1, got {options["max_concurrency"]}')
        if self.name == 'openai':
            _require(bool(options.get('base_url')), 'options.base_url',
                     'required by the openai narrator')
            _require(bool(options.get('model')), 'options.model',
                     "required by the openai narrator: the served model's name")

    def build(self) -> ValidatedNarrator:
        return ValidatedNarrator(make_narrator(self.name, **dict(self.options)),
                                 retries=self.retries)


def validated_narrator(narrator: NarratorSpec | Narrator) -> ValidatedNarrator:
    if isinstance(narrator, NarratorSpec):
        return narrator.build()
    if isinstance(narrator, ValidatedNarrator):
        return narrator
    return ValidatedNarrator(narrator)


def check_runnable(options: PipelineOptions, narrator: NarratorSpec) -> None:
    """`OptionError` naming the field of `options` or `narrator` when this machine lacks
    what the run needs: the video and detection directories, a detector's or narrator's
    package, a model file."""
    _require(os.path.isdir(options.video_root), 'video_root',
             f'{options.video_root!r} is not a directory')
    if options.detection_source == 'detector':
        package = DETECTOR_PACKAGES.get(options.detector)  # None: a detector of its own
        _require(package is None or _installed(package), 'detector',
                 f'{options.detector} needs {package}: {detectors.INSTALL_HINT}')
        model_path = dict(options.detector_options).get('model_path', '')
        _require(options.detector != 'onnx' or os.path.isfile(model_path),
                 'detector_options.model_path',
                 f'the onnx detector needs its model file, {model_path!r} does not exist')
    else:
        _require(os.path.isdir(options.detection_root), 'detection_root',
                 f'the {options.detection_source} detection files: '
                 f'{options.detection_root!r} is not a directory')
    if narrator.name == 'llama_cpp':
        model_path = dict(narrator.options).get('model_path', '')
        _require(_installed('llama_cpp'), 'name',
                 'llama_cpp needs llama-cpp-python: pip install -r requirements-hod-llm.txt')
        _require(os.path.isfile(model_path), 'options.model_path',
                 f'the llama_cpp narrator needs a GGUF file; {model_path!r} does not exist')
