"""Tiny EPIC-KITCHENS-100 and EGTEA Gaze+ annotation files in the official formats, with
tiny real videos, for the fine-tuning record converters (`records/finetune_sources.py`).

Videos are lossless grey ramps (`tests/helpers/videos.py`: frame i is solid grey 5 * i) at
8 fps, so a frame target at t seconds lands exactly on frame 8 t (no ties) and the stored
frames show which part of the video a clip came from.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np

from tests.helpers.videos import write_grey_video

FPS = 8
WIDTH, HEIGHT = 64, 48
EPIC_VIDEO_FRAMES = 32  # 4 s

# The column order of the published EPIC_100_train.csv / _validation.csv /
# _retrieval_train.csv (`io/epic_files.EPIC_COLUMNS`).
EPIC_HEADER = ['narration_id', 'participant_id', 'video_id', 'narration_timestamp',
               'start_timestamp', 'stop_timestamp', 'start_frame', 'stop_frame', 'narration',
               'verb', 'verb_class', 'noun', 'noun_class', 'all_nouns', 'all_noun_classes']
CLASS_HEADER = ['id', 'key', 'instances', 'category']

# (id, key, instances, category), as EPIC_100_verb_classes.csv / _noun_classes.csv
VERB_CLASSES = [(0, 'take', ['take', 'grab', 'pick-up'], 'retrieve'),
                (1, 'wash', ['wash', 'rinse'], 'clean'),
                (2, 'open', ['open', 'open-up'], 'access'),
                (3, 'close', ['close'], 'access')]
NOUN_CLASSES = [(0, 'tap', ['tap', 'tap:water'], 'appliances'),
                (1, 'drawer', ['drawer'], 'furniture'),
                (2, 'plate', ['plate', 'dish'], 'crockery'),
                (3, 'knife', ['knife'], 'cutlery')]


@dataclasses.dataclass(frozen=True)
class EpicRow:
    narration_id: str
    video_id: str
    start: float
    stop: float
    narration: str
    verb: str
    verb_class: int
    noun: str
    noun_class: int


# Train rows, deliberately not in (verb_class, noun_class) order. P09_01 has no video.
EPIC_TRAIN = [
    EpicRow('P01_01_0', 'P01_01', 0.0, 1.0, 'open drawer', 'open', 2, 'drawer', 1),
    EpicRow('P01_01_1', 'P01_01', 1.0, 2.0, 'take knife', 'take', 0, 'knife', 3),
    EpicRow('P02_03_0', 'P02_03', 0.5, 1.5, 'wash plate', 'wash', 1, 'plate', 2),
    EpicRow('P02_03_1', 'P02_03', 1.5, 2.5, 'take plate', 'take', 0, 'plate', 2),
    EpicRow('P01_01_2', 'P01_01', 2.5, 3.5, 'open the drawer again', 'open', 2, 'drawer', 1),
    EpicRow('P09_01_0', 'P09_01', 0.0, 1.0, 'take plate', 'take', 0, 'plate', 2),
]
# The action set of EPIC_TRAIN: its distinct pairs sorted by (verb_class, noun_class).
TRAIN_ACTIONS = [(0, 2), (0, 3), (1, 2), (2, 1)]
TRAIN_ACTION_NAMES = ['take:plate', 'take:knife', 'wash:plate', 'open:drawer']
# Validation: one pair seen in training, one (close, drawer) = (3, 1) never seen there.
EPIC_VALIDATION = [
    EpicRow('P02_03_2', 'P02_03', 2.5, 3.5, 'take knife', 'take', 0, 'knife', 3),
    EpicRow('P01_01_3', 'P01_01', 3.0, 3.5, 'close drawer', 'close', 3, 'drawer', 1),
]

# MIR: the sentence CSV holds the distinct narrations (not 'open the drawer again');
# the relevancy matrix is clips (EPIC_TRAIN rows) x sentences.
SENTENCES = [('P01_01_0', 'open drawer'), ('P01_01_1', 'take knife'),
             ('P02_03_0', 'wash plate'), ('P02_03_1', 'take plate')]
RELEVANCY = np.array([
    [1.0, 0.0, 0.0, 0.1],   # 0.1 is not > the 0.1 threshold
    [0.0, 1.0, 0.0, 0.5],
    [0.0, 0.2, 1.0, 0.5],
    [0.0, 0.5, 0.5, 1.0],   # a tie: sentence order
    [0.5, 0.0, 0.0, 0.0],   # own narration not among the sentences: added with 1.0
    [0.0, 0.0, 0.3, 1.0],
], np.float64)
# Per train clip, its caption candidates (text, relevancy) at threshold 0.1.
EXPECTED_CAPTIONS = {
    'P01_01_0': [('open drawer', 1.0)],
    'P01_01_1': [('take knife', 1.0), ('take plate', 0.5)],
    'P02_03_0': [('wash plate', 1.0), ('take plate', 0.5), ('take knife', 0.2)],
    'P02_03_1': [('take plate', 1.0), ('take knife', 0.5), ('wash plate', 0.5)],
    'P01_01_2': [('open the drawer again', 1.0), ('open drawer', 0.5)],
    'P09_01_0': [('take plate', 1.0), ('wash plate', 0.3)],
}


def timestamp(seconds: float) -> str:
    """`HH:MM:SS.ff`, as the EPIC CSVs write times."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f'{hours:02d}:{minutes:02d}:{secs:05.2f}'


def epic_fields(row: EpicRow) -> list:
    return [row.narration_id, row.video_id.split('_')[0], row.video_id, timestamp(row.start),
            timestamp(row.start), timestamp(row.stop), round(row.start * 60),
            round(row.stop * 60), row.narration, row.verb, row.verb_class, row.noun,
            row.noun_class, f"['{row.noun}']", f'[{row.noun_class}]']


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='', encoding='utf-8') as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_epic_csv(path: Path, rows, header=EPIC_HEADER) -> Path:
    return write_csv(path, header, [epic_fields(row) for row in rows])


def write_class_csv(path: Path, classes) -> Path:
    return write_csv(path, CLASS_HEADER, [(i, key, repr(list(instances)), category)
                                          for i, key, instances, category in classes])


def write_video(path: Path, num_frames: int) -> Path:
    """A grey-ramp mp4 at FPS; `.MP4` names (EPIC's participant layout) too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.stem + '.staging.mp4')
    write_grey_video(staging, num_frames=num_frames, width=WIDTH, height=HEIGHT, fps=FPS)
    os.replace(staging, path)
    return path


@dataclasses.dataclass(frozen=True)
class EpicFiles:
    root: Path
    videos: Path
    train_csv: Path
    validation_csv: Path
    verb_classes: Path
    noun_classes: Path
    sentences_csv: Path
    relevancy_pkl: Path


def write_epic(directory: Path) -> EpicFiles:
    """EPIC_100_{train,validation}.csv, the class CSVs, the MIR sentence CSV and relevancy
    pickle (a pickled numpy array, as the official file), and videos in both layouts:
    `videos/P01_01.mp4` and `videos/P02/P02_03.MP4` (no video for P09_01)."""
    videos = directory / 'videos'
    write_video(videos / 'P01_01.mp4', EPIC_VIDEO_FRAMES)
    write_video(videos / 'P02' / 'P02_03.MP4', EPIC_VIDEO_FRAMES)
    relevancy_pkl = directory / 'caption_relevancy_EPIC_100_retrieval_train.pkl'
    with open(relevancy_pkl, 'wb') as file:
        pickle.dump(RELEVANCY, file, protocol=4)
    return EpicFiles(
        directory, videos,
        write_epic_csv(directory / 'EPIC_100_train.csv', EPIC_TRAIN),
        write_epic_csv(directory / 'EPIC_100_validation.csv', EPIC_VALIDATION),
        write_class_csv(directory / 'EPIC_100_verb_classes.csv', VERB_CLASSES),
        write_class_csv(directory / 'EPIC_100_noun_classes.csv', NOUN_CLASSES),
        write_csv(directory / 'EPIC_100_retrieval_train_sentence.csv',
                  ['narration_id', 'narration'], SENTENCES),
        relevancy_pkl)


# ---- EGTEA Gaze+ -------------------------------------------------------------------------
EGTEA_ACTIONS = ['Open_drawer', 'Take_knife', 'Wash_plate', 'Close_fridge']  # idx 1..4
EGTEA_VERBS = ['Open', 'Take', 'Wash', 'Close']
EGTEA_NOUNS = ['drawer', 'knife', 'plate', 'fridge']
# (clip_id, action_idx, verb_idx, noun_idx (1-based), frames; None: no video)
EGTEA_CLIPS = [
    ('OP01-R01-PastaSalad-1000-2000-F000024-F000060', 1, 1, 1, 8),
    ('OP01-R01-PastaSalad-3000-3400-F000090-F000102', 3, 3, 3, 16),
    ('P20-R03-BaconAndEggs-520-910-F000015-F000027', 2, 2, 2, 8),
    ('P20-R03-BaconAndEggs-1200-1500-F000036-F000045', 4, 4, 4, None),
]


@dataclasses.dataclass(frozen=True)
class EgteaFiles:
    root: Path
    videos: Path
    split: Path
    action_idx: Path
    verb_idx: Path
    noun_idx: Path


def write_idx(path: Path, names) -> Path:
    path.write_text(''.join(f'{name} {index}\n' for index, name in enumerate(names, 1)))
    return path


def write_egtea(directory: Path) -> EgteaFiles:
    """action_idx.txt / verb_idx.txt / noun_idx.txt, test_split1.txt (`clip_id action_idx
    verb_idx noun_idx`, 1-based) and the trimmed clips `videos/{first three fields}/
    {clip_id}.mp4` (the last clip has none)."""
    directory.mkdir(parents=True, exist_ok=True)
    videos = directory / 'videos'
    for clip_id, *_, num_frames in EGTEA_CLIPS:
        if num_frames is not None:
            write_video(videos / '-'.join(clip_id.split('-')[:3]) / f'{clip_id}.mp4',
                        num_frames)
    split = directory / 'test_split1.txt'
    split.write_text(''.join(f'{clip_id} {action} {verb} {noun}\n'
                             for clip_id, action, verb, noun, _ in EGTEA_CLIPS))
    return EgteaFiles(directory, videos, split,
                      write_idx(directory / 'action_idx.txt', EGTEA_ACTIONS),
                      write_idx(directory / 'verb_idx.txt', EGTEA_VERBS),
                      write_idx(directory / 'noun_idx.txt', EGTEA_NOUNS))
