"""Evaluation inputs: EPIC timestamps and frame ranges, the seeking frame reader, the EgoMCQ
chunked store, EGTEA whole-clip sampling."""

from pathlib import Path

import numpy as np
import pytest

from egovideo_jax.evaluate import epic
from egovideo_jax.evaluate.egomcq import ChunkedStore, Clip
from egovideo_jax.evaluate.egtea import whole_clip_indices
from egovideo_jax.io.csv_rows import parse_timestamp
from egovideo_jax.media.frames import read_frames_seeking
from egovideo_jax.media.video import read_frames
from tests.helpers.eval_fixtures import (
    EPIC_HEADER,
    EPIC_TEST_CLIPS,
    FPS,
    MCQ_VIDEOS,
    PALETTE,
    epic_row,
    write_csv,
    write_egomcq,
    write_video,
)

COLOUR_TOLERANCE = 8  # solid colours through yuv420p H.264


def test_parse_timestamp():
    assert parse_timestamp('00:00:02.61') == pytest.approx(2.61)
    assert parse_timestamp('01:02:03.5') == pytest.approx(3723.5)
    assert parse_timestamp('00:10:00') == 600.0
    for bad in ('2.61', '00:02.61', 'aa:bb:cc.dd', '00:00:02,61'):
        with pytest.raises(ValueError, match='HH:MM:SS.ff'):
            parse_timestamp(bad)


def test_read_epic_csv(tmp_path):
    path = write_csv(tmp_path / 'clips.csv', EPIC_HEADER, [epic_row(*c) for c in EPIC_TEST_CLIPS])
    clips = epic.read_epic_csv(path)
    assert [c.narration_id for c in clips] == [c[0] for c in EPIC_TEST_CLIPS]
    last = clips[-1]
    assert (last.participant_id, last.video_id, last.narration) == (
        'P02', 'P02_03', 'close drawer, slowly')  # a quoted field with a comma
    assert (last.start_seconds, last.stop_seconds, last.action) == (2.5, 3.9, '4:3')
    assert last.source == f'{path}, line 7'


def make_clip(start, stop):
    return epic.EpicClip('P01_01_9', 'P01', 'P01_01', start, stop, 'x', 0, 0, 'f.csv, line 2')


@pytest.mark.parametrize('start, stop, n, expected', [
    (0.0, 1.0, 4, (0, 10)),      # 10 frames
    (0.0, 1.0, 16, (0, 16)),     # at least n frames
    (2.0, 3.2, 4, (20, 32)),
    (2.5, 3.9, 16, (25, 40)),    # cut at the video's end (40 frames)
    (3.8, 9.0, 4, (38, 40)),     # stop past the end
])
def test_epic_frame_range(start, stop, n, expected):
    assert epic.frame_range(make_clip(start, stop), FPS, 40, n) == expected


def test_epic_clip_past_the_video():
    with pytest.raises(ValueError, match=r'the clip starts at frame 45, past the end of its '
                                         r'video \(40 frames at 10 fps\)'):
        epic.frame_range(make_clip(4.5, 5.0), FPS, 40, 4)


def test_whole_clip_indices():
    np.testing.assert_array_equal(whole_clip_indices(16, 4), [2, 6, 10, 14])
    np.testing.assert_array_equal(whole_clip_indices(5, 8), [0, 0, 1, 2, 2, 3, 4, 4])


@pytest.fixture(scope='module')
def long_video(tmp_path_factory):
    """120 frames, a new colour every 10, a keyframe every 8 frames (so seeking matters)."""
    colours = [PALETTE[i // 10] for i in range(120)]
    return write_video(tmp_path_factory.mktemp('seek') / 'long.mp4', colours), colours


@pytest.mark.parametrize('indices', [[0], [5, 3, 5], [47, 48, 49, 50], [119, 60], [100, 118]])
def test_seeking_reader_matches_decoding_from_the_start(long_video, indices):
    path, _ = long_video
    np.testing.assert_array_equal(read_frames_seeking(path, indices), read_frames(path, indices))


def test_seeking_reader_errors_name_the_file(long_video, tmp_path):
    path, _ = long_video
    with pytest.raises(ValueError, match=f'{path}: frame index 120 is out of range'):
        read_frames_seeking(path, [10, 120])
    with pytest.raises(ValueError, match='nowhere.mp4'):
        read_frames_seeking(tmp_path / 'nowhere.mp4', [0])


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    section = write_egomcq(tmp_path_factory.mktemp('egomcq'))
    return ChunkedStore(Path(section.root), section.chunk_seconds, section.fps)


def test_chunked_store_reads_global_frames_across_chunks(store):
    uid = next(iter(MCQ_VIDEOS))  # colour changes every 5 frames, 20 frames per chunk
    indices = np.array([0, 19, 20, 24, 25, 39, 40, 51])
    frames = store.read(uid, indices).astype(int)
    expected = PALETTE[indices // 5].astype(int)
    assert np.abs(frames.mean(axis=(1, 2)) - expected).max() <= COLOUR_TOLERANCE


def test_chunked_store_frame_ranges(store):
    uid_a, uid_b = MCQ_VIDEOS  # 52 and 45 frames
    assert store.frame_range(Clip(uid_b, 1.5, 2.6)) == (15, 26)
    assert store.frame_range(Clip(uid_a, 4.5, 7.0)) == (45, 52)  # ends with the last chunk
    assert store.frame_range(Clip(uid_b, 0.0, 0.0)) == (0, 1)    # at least one frame
    assert store.first_chunk(Clip(uid_a, 4.5, 7.0)).name == '0002.mp4'
