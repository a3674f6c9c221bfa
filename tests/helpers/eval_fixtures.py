"""Tiny zero-shot benchmark inputs in the official formats, and the tiny models that run them.

Videos are 64x48 H.264 at 10 fps whose frames are solid colours, so clips differ. Each
`write_*` function writes one benchmark's files under a directory and returns the evaluator
section (`type` + paths) that reads them.
"""
from __future__ import annotations

import csv
import functools
import json
import pickle
from pathlib import Path

import av
import ml_collections
import numpy as np

FPS = 10
WIDTH, HEIGHT = 64, 48
BATCH_SIZE = 4
SINGLE_FRAMES = 8  # frames per clip for single-branch models

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]], np.uint8)


@functools.lru_cache(maxsize=None)
def tiny_model(mode: str):
    """One random tiny model per mode for the whole test session (building one compiles)."""
    from egovideo_jax.api import load
    return load(variant='tiny', mode=mode, verbose=False)


def write_video(path: Path, colours, fps: int = FPS) -> Path:
    """One solid-colour frame per entry of `colours` (RGB triples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode='w', format='mp4') as container:
        stream = container.add_stream('libx264', rate=fps, options={'g': '8'})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
        for colour in colours:
            pixels = np.broadcast_to(np.asarray(colour, np.uint8), (HEIGHT, WIDTH, 3)).copy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format='rgb24')))
        container.mux(stream.encode())
    return path


def segment_colours(num_frames: int, frames_per_colour: int, offset: int = 0):
    """Colour changes every `frames_per_colour` frames, starting at palette entry `offset`."""
    return [PALETTE[(offset + i // frames_per_colour) % len(PALETTE)] for i in range(num_frames)]


def section(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(batch_size=BATCH_SIZE, num_workers=2,
                                          num_frames=SINGLE_FRAMES, **fields))


# ---- EPIC-KITCHENS-100 -------------------------------------------------------------------
EPIC_HEADER = ['narration_id', 'participant_id', 'video_id', 'narration_timestamp',
               'start_timestamp', 'stop_timestamp', 'start_frame', 'stop_frame', 'narration',
               'verb', 'verb_class', 'noun', 'noun_class', 'all_nouns', 'all_noun_classes']
# (narration_id, video_id, start s, stop s, narration, verb, verb_class, noun, noun_class)
EPIC_TEST_CLIPS = [
    ('P01_01_0', 'P01_01', 0.0, 1.0, 'open drawer', 'open', 0, 'drawer', 3),
    ('P01_01_1', 'P01_01', 1.0, 2.0, 'take knife', 'take', 1, 'knife', 5),
    ('P01_01_2', 'P01_01', 2.0, 3.2, 'open drawer', 'open', 0, 'drawer', 3),
    ('P02_03_0', 'P02_03', 0.5, 1.5, 'wash plate', 'wash', 2, 'plate', 7),
    ('P02_03_1', 'P02_03', 1.5, 2.5, 'take plate', 'take', 1, 'plate', 7),
    ('P02_03_2', 'P02_03', 2.5, 3.9, 'close drawer, slowly', 'close', 4, 'drawer', 3),
]
EPIC_TRAIN_CLIPS = [
    ('P03_01_0', 'P03_01', 0.0, 1.5, 'cut onion', 'cut', 5, 'onion', 9),
    ('P03_01_1', 'P03_01', 1.5, 2.0, 'open the drawer', 'open', 0, 'drawer', 3),
    ('P03_01_2', 'P03_01', 2.0, 4.0, 'open fridge', 'open', 0, 'fridge', 11),
    ('P03_01_3', 'P03_01', 4.0, 5.0, 'wash knife', 'wash', 2, 'knife', 5),
]
EPIC_VIDEO_FRAMES = 40


def timestamp(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f'{hours:02d}:{minutes:02d}:{secs:05.2f}'


def epic_row(narration_id, video_id, start, stop, narration, verb, verb_class, noun,
             noun_class):
    return [narration_id, video_id.split('_')[0], video_id, timestamp(start), timestamp(start),
            timestamp(stop), round(start * FPS), round(stop * FPS), narration, verb, verb_class,
            noun, noun_class, f"['{noun}']", f'[{noun_class}]']


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def epic_relevancy(clips, sentence_clips) -> np.ndarray:
    """EPIC's graded relevancy: half for a shared verb class, half for a shared noun class."""
    return np.array([[0.5 * (c[6] == s[6]) + 0.5 * (c[8] == s[8]) for s in sentence_clips]
                     for c in clips])


def write_epic_videos(root: Path):
    # One video in each of the two layouts the evaluators accept.
    write_video(root / 'P01_01.mp4', segment_colours(EPIC_VIDEO_FRAMES, 10, offset=0))
    write_video(root / 'P02' / 'P02_03.MP4', segment_colours(EPIC_VIDEO_FRAMES, 10, offset=4))


def write_ek100_mir(directory: Path) -> ml_collections.ConfigDict:
    write_epic_videos(directory / 'videos')
    clips_csv = write_csv(directory / 'EPIC_100_retrieval_test.csv', EPIC_HEADER,
                          [epic_row(*clip) for clip in EPIC_TEST_CLIPS])
    first_with_narration = {}
    for clip in EPIC_TEST_CLIPS:
        first_with_narration.setdefault(clip[4], clip)
    sentence_clips = list(first_with_narration.values())
    sentences_csv = write_csv(directory / 'EPIC_100_retrieval_test_sentence.csv',
                              ['narration_id', 'narration'],
                              [[clip[0], clip[4]] for clip in sentence_clips])
    relevancy_pkl = directory / 'caption_relevancy_EPIC_100_retrieval_test.pkl'
    with open(relevancy_pkl, 'wb') as file:
        pickle.dump(epic_relevancy(EPIC_TEST_CLIPS, sentence_clips), file, protocol=2)
    return section(type='ek100_mir', root=str(directory / 'videos'), clips_csv=str(clips_csv),
                   sentences_csv=str(sentences_csv), relevancy_pkl=str(relevancy_pkl))


def write_ek100_cls(directory: Path) -> ml_collections.ConfigDict:
    write_epic_videos(directory / 'videos')
    train_csv = write_csv(directory / 'EPIC_100_train.csv', EPIC_HEADER,
                          [epic_row(*clip) for clip in EPIC_TRAIN_CLIPS])
    validation_csv = write_csv(directory / 'EPIC_100_validation.csv', EPIC_HEADER,
                               [epic_row(*clip) for clip in EPIC_TEST_CLIPS])
    return section(type='ek100_cls', root=str(directory / 'videos'), train_csv=str(train_csv),
                   validation_csv=str(validation_csv))


# ---- EGTEA Gaze+ -------------------------------------------------------------------------
EGTEA_ACTIONS = ['Open_drawer', 'Take_knife', 'Wash_plate', 'Close_fridge']
# (clip_id, action idx 1-based, frames)
EGTEA_CLIPS = [
    ('OP01-R01-PastaSalad-1000-2000-F000024-F000060', 1, 12),
    ('OP01-R01-PastaSalad-3000-3400-F000090-F000102', 3, 5),
    ('P20-R03-BaconAndEggs-520-910-F000015-F000027', 2, 20),
    ('P20-R03-BaconAndEggs-1200-1500-F000036-F000045', 1, 9),
    ('P20-R03-BaconAndEggs-1600-1900-F000048-F000057', 4, 16),
]


def write_egtea(directory: Path) -> ml_collections.ConfigDict:
    directory.mkdir(parents=True, exist_ok=True)
    action_idx = directory / 'action_idx.txt'
    action_idx.write_text(''.join(f'{name} {i}\n' for i, name in enumerate(EGTEA_ACTIONS, 1)))
    test_split = directory / 'test_split1.txt'
    test_split.write_text(''.join(f'{clip_id} {label} {label + 10} {label + 20}\n'
                                  for clip_id, label, _ in EGTEA_CLIPS))
    for index, (clip_id, _, num_frames) in enumerate(EGTEA_CLIPS):
        write_video(directory / 'videos' / '-'.join(clip_id.split('-')[:3]) / f'{clip_id}.mp4',
                    segment_colours(num_frames, 4, offset=3 * index))
    return section(type='egtea', root=str(directory / 'videos'), action_idx=str(action_idx),
                   test_split=str(test_split))


# ---- EgoMCQ ------------------------------------------------------------------------------
MCQ_CHUNK_SECONDS = 2.0
MCQ_CHUNK_FRAMES = 20  # at FPS
MCQ_VIDEOS = {'4c2b7d2e-aaaa-1111': 52, '9f1e0c3a-bbbb-2222': 45}  # uid -> total frames


def mcq_clip(uid, start, end, text='', **extra):
    return {'video_uid': uid, 'video_dur': MCQ_VIDEOS[uid] / FPS, 'narration_source': 'n_1',
            'narration_ind': 0, 'narration_time': start, 'clip_start': start,
            'clip_end': end, 'clip_text': text, 'tag_verb': '[1]', 'tag_noun': '[2]', **extra}


def mcq_items():
    a, b = MCQ_VIDEOS
    choices_inter = [mcq_clip(a, 0.2, 1.0), mcq_clip(b, 1.5, 2.6),  # crosses a chunk boundary
                     mcq_clip(a, 4.5, 7.0),                          # runs past the video's end
                     mcq_clip(b, -0.3, 0.4),                         # starts before the video
                     mcq_clip(b, 3.0, 4.4)]
    choices_intra = [mcq_clip(a, 0.0, 0.8), mcq_clip(a, 1.0, 1.8), mcq_clip(a, 2.0, 2.8),
                     mcq_clip(a, 3.0, 3.8), mcq_clip(a, 4.0, 4.8)]
    return {
        '0': {'query': mcq_clip(a, 0.2, 1.0, '#C C opens the drawer'),
              'choices': {str(i): c for i, c in enumerate(choices_inter)}, 'answer': 0,
              'types': 1},
        '1': {'query': mcq_clip(a, 2.0, 2.8, '#C C takes the knife'),
              'choices': {str(i): c for i, c in enumerate(choices_intra)}, 'answer': 2,
              'types': 2},
        '2': {'query': mcq_clip(b, 3.0, 4.4, '#C C washes a plate'),
              'choices': {str(i): c for i, c in enumerate(choices_inter)}, 'answer': 4,
              'types': 1},
    }


def write_egomcq(directory: Path) -> ml_collections.ConfigDict:
    for offset, (uid, num_frames) in enumerate(MCQ_VIDEOS.items()):
        colours = segment_colours(num_frames, 5, offset=5 * offset)
        for chunk, start in enumerate(range(0, num_frames, MCQ_CHUNK_FRAMES)):
            write_video(directory / 'chunks' / uid / f'{chunk:04d}.mp4',
                        colours[start:start + MCQ_CHUNK_FRAMES])
    path = directory / 'egomcq.json'
    path.write_text(json.dumps(mcq_items(), indent=1))
    return section(type='egomcq', root=str(directory / 'chunks'), json=str(path),
                   chunk_seconds=MCQ_CHUNK_SECONDS, fps=float(FPS))


WRITERS = {'ek100_mir': write_ek100_mir, 'ek100_cls': write_ek100_cls, 'egtea': write_egtea,
           'egomcq': write_egomcq}
