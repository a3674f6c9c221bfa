"""Official EK-100 and EGTEA Gaze+ files + videos -> labelled clip records for fine-tuning.

Both converters write a dataset directory like `records convert` (the same frame extraction,
`DatasetWriter`, skip accounting and `skipped.csv`: `convert_csv.write_clips`), with the
schema's label block filled in, plus `classes.json` (`egovideo_jax/records/classes.py`).

**EPIC-KITCHENS-100** (`convert_epic`): one record per row of the clips CSV
(`EPIC_100_train.csv`, `EPIC_100_validation.csv`, `EPIC_100_retrieval_train.csv`); clip id =
`narration_id`, source `epic`, frames spread over `start_timestamp..stop_timestamp` of
`{root}/{video_id}.mp4` or `{root}/{participant_id}/{video_id}.MP4`. Labels: `verb` =
`verb_class`, `noun` = `noun_class`, `action` = the index of the pair
`(verb_class, noun_class)` in the action set: every pair seen in the `action_classes_from`
CSVs (default: the clips CSV itself), **sorted by (verb_class, noun_class) numerically**. A
clip whose pair is not in the set keeps its verb and noun labels, gets no action label and is
counted. Class names: the `key` column of `EPIC_100_verb_classes.csv` /
`EPIC_100_noun_classes.csv` when given, else the class ids as strings; action names
`"verb_name:noun_name"`; `action_to_verb` / `action_to_noun` map each action to its parts.

MIR mode (a sentence CSV and a relevancy pickle given): the relevancy matrix (clips x
sentences, rows = the clips CSV rows in order, columns = the sentence CSV rows; read with the
numpy-only unpickler) gives each clip as captions the sentences with relevancy > threshold
(0.1, as LaViLa / AVION draw from), sorted by relevancy descending (ties in sentence order),
the clip's own narration always among them (relevancy 1; added when the matrix lacks it, and
counted); `max_captions` > 0 keeps only that many, the most relevant (own narration kept).

**EGTEA Gaze+** (`convert_egtea`): one record per line of a split file (`train_split1.txt`,
`test_split1.txt`: `clip_id action_idx [verb_idx noun_idx]`, 1-based); the whole trimmed clip
`{root}/{first three '-'-fields}/{clip_id}.mp4` (times in seconds of that file), source
`egtea`, narration = the action's class text; labels `action` = action_idx - 1 (and `verb`,
`noun` = their idx - 1 when the line has them). Class names from `action_idx.txt` (106 in the
real data); verb / noun names from `verb_idx.txt` / `noun_idx.txt` when given, else the
1-based ids as strings.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Sequence

import numpy as np

from egovideo_jax.io.epic_files import (
    EgteaClip,
    EpicClip,
    VideoNotFoundError,
    clip_video,
    find_video,
    read_action_names,
    read_egtea_split,
    read_epic_classes,
    read_epic_csv,
    read_sentences,
)
from egovideo_jax.io.safe_pickle import load_array
from egovideo_jax.media.video import video_info
from egovideo_jax.records import video_clips
from egovideo_jax.records.classes import ClassMaps, write_classes
from egovideo_jax.records.convert_csv import (
    BAD_TIMES,
    MISSING_VIDEO,
    BadRow,
    ClipOptions,
    ConversionSummary,
    ConvertedClip,
    Skip,
    clip_record,
    read_frames,
    write_clips,
)

DEFAULT_CAPTION_THRESHOLD = 0.1


@dataclasses.dataclass
class FinetuneSummary:
    """What a converter read and wrote: `conversion` (rows, clips, skips, manifest), the
    classes written to classes.json, and the counts it reports (`counts`, in print order)."""
    conversion: ConversionSummary
    classes: ClassMaps
    counts: dict[str, int]

    def lines(self) -> list[str]:
        lines = [f'{name}: {value}' for name, value in self.counts.items()]
        lines.append('classes: ' + ', '.join(f'{head} {self.classes.num_classes(head)}'
                                             for head in self.classes.names))
        return lines


def _line_of(source: str) -> int:
    """N of a 'FILE, line N' source."""
    return int(source.rsplit('line ', 1)[-1])


def _check_options(frames_per_clip: int, short_side: int, workers: int, video_root) -> None:
    if frames_per_clip < 1 or short_side < 1 or workers < 1:
        raise ValueError('frames_per_clip, short_side and workers must be >= 1')
    if not os.path.isdir(video_root):
        raise FileNotFoundError(f'video root {video_root} is not a directory')


# ----------------------------------------------------------------------------- EPIC-KITCHENS

@dataclasses.dataclass(frozen=True)
class EpicItem:
    clip: EpicClip
    labels: dict[str, int]
    captions: tuple[tuple[str, float], ...] | None  # None: no caption block


def epic_class_maps(clips: Sequence[EpicClip], action_clips: Sequence[EpicClip],
                    verb_classes_csv=None, noun_classes_csv=None, source: str = '') -> ClassMaps:
    """Class maps of the module docstring; ValueError naming the row for a class id beyond
    the class CSVs."""
    names = {}
    for part, csv_path in (('verb', verb_classes_csv), ('noun', noun_classes_csv)):
        if csv_path is not None:
            names[part] = [entry.key for entry in read_epic_classes(csv_path)]
            for clip in (*clips, *action_clips):
                value = getattr(clip, f'{part}_class')
                if not 0 <= value < len(names[part]):
                    raise ValueError(f'{clip.source}: {part}_class {value} is not a class of '
                                     f'{csv_path} (0..{len(names[part]) - 1})')
        else:
            values = [getattr(clip, f'{part}_class') for clip in (*clips, *action_clips)]
            negative = [clip for clip in (*clips, *action_clips)
                        if getattr(clip, f'{part}_class') < 0]
            if negative:
                raise ValueError(f'{negative[0].source}: negative {part}_class')
            names[part] = [str(index) for index in range(max(values) + 1)]
    pairs = sorted({(clip.verb_class, clip.noun_class) for clip in action_clips})
    names['action'] = [f'{names["verb"][verb]}:{names["noun"][noun]}' for verb, noun in pairs]
    return ClassMaps(names, np.array([verb for verb, _ in pairs], np.int64),
                     np.array([noun for _, noun in pairs], np.int64), source)


def epic_captions(clips: Sequence[EpicClip], sentences_csv, relevancy_pkl,
                  threshold: float = DEFAULT_CAPTION_THRESHOLD, clips_csv='',
                  max_captions: int = 0
                  ) -> tuple[list[tuple[tuple[str, float], ...]], int, int]:
    """Per clip, its caption candidates (text, relevancy) as in the module docstring, the
    number of sentences, and how many clips had their own narration added. `max_captions`
    > 0 keeps that many, the most relevant, the clip's own narration always among them."""
    sentences = read_sentences(sentences_csv)
    relevancy = load_array(relevancy_pkl)
    expected = (len(clips), len(sentences))
    if relevancy.shape != expected:
        raise ValueError(f'{relevancy_pkl}: relevancy has shape {relevancy.shape}, expected '
                         f'{expected} = (clips in {clips_csv}, sentences in {sentences_csv})')
    if not np.issubdtype(relevancy.dtype, np.number) or not np.all(
            (relevancy >= 0) & (relevancy <= 1)):
        raise ValueError(f'{relevancy_pkl}: relevancy values must be numbers in [0, 1]')
    texts = [sentence.narration for sentence in sentences]
    result, own_added = [], 0
    for row, clip in zip(relevancy, clips):
        columns = np.flatnonzero(row > threshold)
        columns = columns[np.argsort(-row[columns], kind='stable')]
        captions = [(texts[column], float(row[column])) for column in columns]
        own = next((index for index, (text, _) in enumerate(captions)
                    if text == clip.narration), None)
        if own is None:
            captions.insert(0, (clip.narration, 1.0))
            own, own_added = 0, own_added + 1
        if 0 < max_captions < len(captions):
            # The most relevant, the clip's own narration always among them.
            captions = captions[:max_captions] if own < max_captions else (
                captions[:max_captions - 1] + [captions[own]])
        result.append(tuple(captions))
    return result, len(sentences), own_added


def convert_epic_item(item: EpicItem, options: ClipOptions) -> ConvertedClip | Skip:
    clip = item.clip

    def skip(reason, detail):
        return Skip(_line_of(clip.source), clip.video_id, f'{clip.start_seconds:.2f}',
                    f'{clip.stop_seconds:.2f}', reason, detail)

    try:
        try:
            path = find_video(options.video_root, clip)
        except VideoNotFoundError as error:
            raise BadRow(MISSING_VIDEO, str(error)) from None
        if not clip.stop_seconds > clip.start_seconds:
            raise BadRow(BAD_TIMES, f'need start < stop, got [{clip.start_seconds}, '
                                    f'{clip.stop_seconds}]')
        frames, frame_times, fps = read_frames(
            video_clips.read_video_frames, str(path), clip.start_seconds, clip.stop_seconds,
            options.frames_per_clip, options.short_side)
    except BadRow as error:
        return skip(error.reason, error.detail)
    extra = {'labels': dict(item.labels)}
    if item.captions is not None:
        extra['captions'] = [text for text, _ in item.captions]
        extra['caption_relevancy'] = np.array([rel for _, rel in item.captions], np.float32)
    return ConvertedClip(clip_record(
        clip_id=clip.narration_id, video_id=clip.video_id, source='epic',
        start=clip.start_seconds, end=clip.stop_seconds, frames=frames, frame_times=frame_times,
        narration=clip.narration, jpeg_quality=options.jpeg_quality, **extra), fps)


def convert_epic(clips_csv, video_root, out_dir, *, verb_classes_csv=None,
                 noun_classes_csv=None, action_classes_from: Sequence | None = None,
                 sentences_csv=None, relevancy_pkl=None,
                 caption_threshold: float = DEFAULT_CAPTION_THRESHOLD, max_captions: int = 0,
                 frames_per_clip: int = 32, short_side: int = 256,
                 records_per_shard: int = 256, format: str = 'tfrecord',
                 jpeg_quality: int = 90, workers: int = 1, producer: dict | None = None,
                 progress: bool = True) -> FinetuneSummary:
    """EK-100 CSV (+ class CSVs, + MIR sentences and relevancy) + videos -> labelled records
    in `out_dir` (module docstring)."""
    _check_options(frames_per_clip, short_side, workers, video_root)
    if (sentences_csv is None) != (relevancy_pkl is None):
        raise ValueError('MIR captions need both the sentence CSV and the relevancy pickle')
    if not 0 <= caption_threshold < 1:
        raise ValueError(f'caption_threshold must be in [0, 1), got {caption_threshold}')
    if max_captions < 0:
        raise ValueError(f'max_captions must be >= 0 (0: keep all), got {max_captions}')
    clips = read_epic_csv(clips_csv)
    action_sources = list(action_classes_from or [clips_csv])
    action_clips = [clip for path in action_sources
                    for clip in (clips if os.fspath(path) == os.fspath(clips_csv)
                                 else read_epic_csv(path))]
    classes = epic_class_maps(clips, action_clips, verb_classes_csv, noun_classes_csv,
                              source=', '.join(os.path.basename(os.fspath(path))
                                               for path in action_sources))
    action_index = {tuple(map(int, (verb, noun))): index for index, (verb, noun) in enumerate(
        zip(classes.action_to_verb, classes.action_to_noun))}
    captions: list = [None] * len(clips)
    num_sentences = own_added = 0
    if sentences_csv is not None:
        captions, num_sentences, own_added = epic_captions(clips, sentences_csv, relevancy_pkl,
                                            caption_threshold, clips_csv, max_captions)
    items = []
    for clip, clip_captions in zip(clips, captions):
        labels = {'verb': clip.verb_class, 'noun': clip.noun_class}
        action = action_index.get((clip.verb_class, clip.noun_class))
        if action is not None:
            labels['action'] = action
        items.append(EpicItem(clip, labels, clip_captions))
    written = collections.Counter()

    def count(clip):
        written['clips without an action label'] += 'action' not in clip['labels']
        written['captions stored'] += len(clip.get('captions') or [])

    options = ClipOptions(os.fspath(video_root), frames_per_clip, short_side, 15.0,
                          jpeg_quality)
    conversion = write_clips(
        functools.partial(convert_epic_item, options=options), items, len(items), out_dir,
        workers=workers, records_per_shard=records_per_shard, format=format,
        producer=producer, progress=progress, on_clip=count,
        before_close=lambda writer: write_classes(writer.out_dir, classes))
    counts = {'rows': len(clips), 'videos': len({clip.video_id for clip in clips}),
              'clips written': conversion.num_clips,
              'clips without an action label': written['clips without an action label']}
    if sentences_csv is not None:
        counts.update({'sentences': num_sentences,
                       'captions stored': written['captions stored'],
                       'clips whose own narration was added': own_added})
    return FinetuneSummary(conversion, classes, counts)


# ----------------------------------------------------------------------------- EGTEA Gaze+

@dataclasses.dataclass(frozen=True)
class EgteaItem:
    clip: EgteaClip
    narration: str


def _whole_clip_frames(path: str, num_frames: int, short_side: int):
    if not os.path.isfile(path):
        raise video_clips.MissingVideoError(f'no video {path}')
    count, fps = video_info(path)
    if fps <= 0 or count < 1:
        raise ValueError(f'{path}: no frames or no frame rate ({count} frames, fps {fps})')
    return (*video_clips.read_video_frames(path, 0.0, count / fps, num_frames, short_side),
            count / fps)


def convert_egtea_item(item: EgteaItem, options: ClipOptions) -> ConvertedClip | Skip:
    clip = item.clip
    path = str(clip_video(options.video_root, clip.clip_id))
    try:
        frames, frame_times, fps, duration = read_frames(
            _whole_clip_frames, path, options.frames_per_clip, options.short_side)
    except BadRow as error:
        return Skip(_line_of(clip.source), clip.clip_id, '', '', error.reason, error.detail)
    labels = {'action': clip.action}
    labels.update({head: value for head, value in (('verb', clip.verb), ('noun', clip.noun))
                   if value is not None})
    return ConvertedClip(clip_record(
        clip_id=clip.clip_id, video_id='-'.join(clip.clip_id.split('-')[:3]), source='egtea',
        start=0.0, end=duration, frames=frames, frame_times=frame_times, narration=item.narration,
        jpeg_quality=options.jpeg_quality, labels=labels), fps)


def egtea_class_maps(clips: Sequence[EgteaClip], action_idx, verb_idx=None,
                     noun_idx=None) -> ClassMaps:
    names = {'action': read_action_names(action_idx)}
    for head, path in (('verb', verb_idx), ('noun', noun_idx)):
        present = [clip for clip in clips if getattr(clip, head) is not None]
        if not present:
            continue
        if path is not None:
            names[head] = read_action_names(path)
            for clip in present:
                if getattr(clip, head) >= len(names[head]):
                    raise ValueError(f'{clip.source}: {head}_idx {getattr(clip, head) + 1} is '
                                     f'not a class of {path} (1..{len(names[head])})')
        else:
            names[head] = [str(index + 1) for index in
                           range(max(getattr(clip, head) for clip in present) + 1)]
    return ClassMaps(names, None, None, os.path.basename(os.fspath(action_idx)))


def convert_egtea(split, action_idx, video_root, out_dir, *, verb_idx=None, noun_idx=None,
                  frames_per_clip: int = 32, short_side: int = 256,
                  records_per_shard: int = 256, format: str = 'tfrecord',
                  jpeg_quality: int = 90, workers: int = 1, producer: dict | None = None,
                  progress: bool = True) -> FinetuneSummary:
    """An EGTEA split file + action_idx.txt + trimmed clips -> labelled records in `out_dir`
    (module docstring)."""
    _check_options(frames_per_clip, short_side, workers, video_root)
    action_names = read_action_names(action_idx)
    clips = read_egtea_split(split, len(action_names))
    classes = egtea_class_maps(clips, action_idx, verb_idx, noun_idx)
    items = [EgteaItem(clip, action_names[clip.action]) for clip in clips]
    options = ClipOptions(os.fspath(video_root), frames_per_clip, short_side, 15.0,
                          jpeg_quality)
    conversion = write_clips(
        functools.partial(convert_egtea_item, options=options), items, len(items), out_dir,
        workers=workers, records_per_shard=records_per_shard, format=format,
        producer=producer, progress=progress,
        before_close=lambda writer: write_classes(writer.out_dir, classes))
    counts = {'rows': len(clips),
              'videos': len({'-'.join(clip.clip_id.split('-')[:3]) for clip in clips}),
              'clips written': conversion.num_clips,
              'actions seen': len({clip.action for clip in clips})}
    return FinetuneSummary(conversion, classes, counts)

