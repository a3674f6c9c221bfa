"""The official EPIC-KITCHENS-100 and EGTEA Gaze+ annotation files, read and checked (layer 0,
so both the record converters and the evaluators use them).

EPIC-KITCHENS-100:
- clip CSVs (`EPIC_100_train.csv`, `EPIC_100_validation.csv`, `EPIC_100_retrieval_*.csv`):
  the columns of `EPIC_COLUMNS`, timestamps `HH:MM:SS.ff`, `all_nouns` / `all_noun_classes`
  quoted Python lists (`"['tap']"`, `"[0]"`) -> `read_epic_csv`;
- class CSVs (`EPIC_100_verb_classes.csv`, `EPIC_100_noun_classes.csv`): header
  `id,key,instances,category`, `instances` a quoted Python list of str
  (`"['take', 'grab', 'pick-up']"`), ids 0..N-1 -> `read_epic_classes`;
- sentence CSVs (`EPIC_100_retrieval_{train,test}_sentence.csv`): `narration_id,narration`
  -> `read_sentences`;
- videos `{root}/{video_id}.mp4` or `{root}/{participant_id}/{video_id}.MP4` -> `find_video`.

EGTEA Gaze+:
- `action_idx.txt`: lines `Name_With_Underscores idx`, idx 1..N -> `read_action_names`
  (class text = the name with `_` -> space, lower-cased);
- `train_split1.txt` / `test_split1.txt`: lines `clip_id action_idx verb_idx noun_idx`
  (all 1-based) -> `read_egtea_split` (0-based labels), or line by line with `read_lines`;
- the trimmed clip of `clip_id` is `{root}/{first three '-'-fields}/{clip_id}.mp4`
  -> `clip_video`.

Every error names the file and line.
"""
from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

from egovideo_jax.io.csv_rows import parse_timestamp, read_csv_rows

EPIC_COLUMNS = ('narration_id', 'participant_id', 'video_id', 'narration_timestamp',
                'start_timestamp', 'stop_timestamp', 'start_frame', 'stop_frame', 'narration',
                'verb', 'verb_class', 'noun', 'noun_class', 'all_nouns', 'all_noun_classes')
CLASS_COLUMNS = ('id', 'key', 'instances', 'category')
SENTENCE_COLUMNS = ('narration_id', 'narration')


# ---------------------------------------------------------------------------- EPIC-KITCHENS

@dataclasses.dataclass(frozen=True)
class EpicClip:
    narration_id: str
    participant_id: str
    video_id: str
    start_seconds: float
    stop_seconds: float
    narration: str
    verb_class: int
    noun_class: int
    source: str  # 'FILE, line N': where errors about this clip point

    @property
    def action(self) -> str:
        """The EK-100 action class name, `"{verb_class}:{noun_class}"`."""
        return f'{self.verb_class}:{self.noun_class}'


def read_epic_csv(path: str | Path) -> list[EpicClip]:
    clips = []
    for source, row in read_csv_rows(path, EPIC_COLUMNS):
        try:
            start, stop = parse_timestamp(row['start_timestamp']), parse_timestamp(
                row['stop_timestamp'])
            verb_class, noun_class = int(row['verb_class']), int(row['noun_class'])
        except ValueError as error:
            raise ValueError(f'{source}: {error}') from None
        if stop < start:
            raise ValueError(f'{source}: stop_timestamp {row["stop_timestamp"]} is before '
                             f'start_timestamp {row["start_timestamp"]}')
        if not row['narration_id'] or not row['video_id']:
            raise ValueError(f'{source}: empty narration_id or video_id')
        clips.append(EpicClip(row['narration_id'], row['participant_id'], row['video_id'],
                              start, stop, row['narration'], verb_class, noun_class, source))
    if not clips:
        raise ValueError(f'{path}: no clips below the header')
    return clips


class VideoNotFoundError(ValueError):
    """No video file for a clip (a ValueError, as the evaluators' input errors are)."""


def find_video(root: str | Path, clip: EpicClip) -> Path:
    """`{root}/{video_id}.mp4`, else `{root}/{participant_id}/{video_id}.MP4`."""
    candidates = [Path(root) / f'{clip.video_id}.mp4',
                  Path(root) / clip.participant_id / f'{clip.video_id}.MP4']
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise VideoNotFoundError(f'{clip.source}: video {clip.video_id} not found; looked for '
                             + ' and '.join(map(str, candidates)))


def find_videos(root: str | Path, clips: Sequence[EpicClip]) -> list[Path]:
    """Each clip's video path (looked up once per video); a missing video names its row."""
    found: dict[str, Path] = {}
    for clip in clips:
        if clip.video_id not in found:
            found[clip.video_id] = find_video(root, clip)
    return [found[clip.video_id] for clip in clips]


@dataclasses.dataclass(frozen=True)
class EpicClass:
    id: int
    key: str
    instances: tuple[str, ...]
    category: str


def read_epic_classes(path: str | Path) -> list[EpicClass]:
    """The classes of `EPIC_100_verb_classes.csv` / `EPIC_100_noun_classes.csv` in id order;
    ValueError naming the file and line for a bad row, or when the ids are not 0..N-1."""
    by_id: dict[int, EpicClass] = {}
    for source, row in read_csv_rows(path, CLASS_COLUMNS):
        try:
            class_id = int(row['id'])
        except ValueError:
            raise ValueError(f'{source}: id {row["id"]!r} is not an integer') from None
        if class_id in by_id:
            raise ValueError(f'{source}: class id {class_id} appears twice')
        if not row['key'].strip():
            raise ValueError(f'{source}: empty key')
        try:
            instances = ast.literal_eval(row['instances'])
        except (ValueError, SyntaxError):
            instances = None
        if not (isinstance(instances, list) and all(isinstance(i, str) for i in instances)):
            raise ValueError(f'{source}: instances {row["instances"]!r} is not a list of '
                             "strings like \"['take', 'grab']\"")
        by_id[class_id] = EpicClass(class_id, row['key'].strip(), tuple(instances),
                                    row['category'])
    if not by_id:
        raise ValueError(f'{path}: no classes below the header')
    if sorted(by_id) != list(range(len(by_id))):
        missing = sorted(set(range(max(len(by_id), max(by_id) + 1))) - set(by_id))
        raise ValueError(f'{path}: class ids must be 0..{len(by_id) - 1} without gaps; '
                         f'missing {missing[:5]}')
    return [by_id[class_id] for class_id in range(len(by_id))]


@dataclasses.dataclass(frozen=True)
class Sentence:
    narration_id: str
    narration: str
    source: str


def read_sentences(path: str | Path) -> list[Sentence]:
    """The rows of a `narration_id,narration` sentence CSV, in file order."""
    sentences = []
    for source, row in read_csv_rows(path, SENTENCE_COLUMNS):
        if not row['narration_id']:
            raise ValueError(f'{source}: empty narration_id')
        sentences.append(Sentence(row['narration_id'], row['narration'], source))
    if not sentences:
        raise ValueError(f'{path}: no sentences below the header')
    return sentences


# ---------------------------------------------------------------------------- EGTEA Gaze+

def read_lines(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """`('FILE, line N', fields)` for every non-blank line of a whitespace-separated file."""
    with open(path, encoding='utf-8') as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield f'{path}, line {number}', line.split()


def read_action_names(path: str | Path) -> list[str]:
    """Class texts in class order (idx 1 first)."""
    names: dict[int, str] = {}
    for source, fields in read_lines(path):
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f'{source}: expected "Name_With_Underscores idx", got '
                             f'{" ".join(fields)!r}')
        idx = int(fields[1])
        if idx in names:
            raise ValueError(f'{source}: class index {idx} appears twice')
        names[idx] = fields[0].replace('_', ' ').lower()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f'{path}: class indices must be 1..{len(names)} without gaps, got '
                         f'{sorted(names)[:5]}...')
    return [names[idx] for idx in range(1, len(names) + 1)]


def clip_video(root: str | Path, clip_id: str) -> Path:
    return Path(root) / '-'.join(clip_id.split('-')[:3]) / f'{clip_id}.mp4'


@dataclasses.dataclass(frozen=True)
class EgteaClip:
    clip_id: str
    action: int        # 0-based (the file's action_idx - 1)
    verb: int | None   # 0-based, None when the line has no verb_idx
    noun: int | None
    source: str        # 'FILE, line N'


def read_egtea_split(path: str | Path, num_actions: int) -> list[EgteaClip]:
    """The clips of a split file (`clip_id action_idx [verb_idx noun_idx]`, 1-based), with
    0-based labels; ValueError naming the line for a malformed line or an action outside
    1..num_actions."""
    clips = []
    for source, fields in read_lines(path):
        if (len(fields) not in (2, 3, 4) or not all(field.isdigit() for field in fields[1:])
                or fields[0].count('-') < 2):
            raise ValueError(f'{source}: expected "clip_id action_idx [verb_idx noun_idx]" '
                             'with a clip_id of at least three "-"-fields, got '
                             f'{" ".join(fields)!r}')
        indices = [int(field) for field in fields[1:]]
        if not 1 <= indices[0] <= num_actions:
            raise ValueError(f'{source}: unknown class {indices[0]}; the action list defines '
                             f'1..{num_actions}')
        if any(index < 1 for index in indices[1:]):
            raise ValueError(f'{source}: verb_idx and noun_idx are 1-based, got '
                             f'{indices[1:]}')
        verb = indices[1] - 1 if len(indices) > 1 else None
        noun = indices[2] - 1 if len(indices) > 2 else None
        clips.append(EgteaClip(fields[0], indices[0] - 1, verb, noun, source))
    if not clips:
        raise ValueError(f'{path}: no clips')
    return clips
