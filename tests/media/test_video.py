"""PyAV decoding on generated videos: frame count, fps, which frame came back, clear errors."""

import av
import numpy as np
import pytest

from egovideo_jax.media.transforms import CLIP_MEAN, CLIP_STD
from egovideo_jax.media.video import load_clips, read_frames, video_info
from tests.helpers.videos import FPS, HEIGHT, LEVEL_STEP, NUM_FRAMES, WIDTH, write_grey_video

TOLERANCE = 2




def grey_levels(frames):
    """Mean grey level per frame, after checking each frame is (nearly) solid."""
    frames = frames.astype(np.float64)
    levels = frames.mean(axis=(1, 2, 3))
    assert np.all(np.abs(frames - levels[:, None, None, None]) <= TOLERANCE)
    return levels


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    return write_grey_video(tmp_path_factory.mktemp('video') / 'grey.mp4')


def test_video_info(video):
    assert video_info(video) == (NUM_FRAMES, FPS)


def test_video_info_counts_frames_when_container_does_not(tmp_path):
    path = write_grey_video(tmp_path / 'grey.mkv', num_frames=20)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    assert video_info(path) == (20, FPS)


def test_read_frames_order_and_repeats(video):
    indices = [10, 3, 10, 47, 0, 46]
    frames = read_frames(video, indices)
    assert frames.shape == (len(indices), HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(grey_levels(frames), LEVEL_STEP * np.array(indices),
                               atol=TOLERANCE)


def test_read_frames_accepts_numpy_and_empty(video):
    frames = read_frames(video, np.array([5], np.int32))
    np.testing.assert_allclose(grey_levels(frames), [25], atol=TOLERANCE)
    assert read_frames(video, []).shape == (0, HEIGHT, WIDTH, 3)


def test_read_frames_index_out_of_range(video):
    with pytest.raises(ValueError, match=r'grey\.mp4.*index 48 is out of range.*48 frames'):
        read_frames(video, [0, 48])


@pytest.mark.parametrize('indices', [[-1], [1.5], [[1, 2]]])
def test_read_frames_bad_indices(video, indices):
    with pytest.raises(ValueError, match=r'grey\.mp4'):
        read_frames(video, indices)


def test_missing_file(tmp_path):
    missing = tmp_path / 'missing.mp4'
    for call in (lambda: video_info(missing), lambda: read_frames(missing, [0])):
        with pytest.raises(ValueError, match=r'missing\.mp4'):
            call()


def test_garbage_file(tmp_path):
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(ValueError, match=r'garbage\.mp4'):
        read_frames(garbage, [0])


def test_no_video_stream(tmp_path):
    path = tmp_path / 'audio.wav'
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('pcm_s16le', rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format='s16',
                                           layout='mono')
        frame.rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(ValueError, match=r'audio\.wav: no video stream'):
        video_info(path)


def test_load_clip_samples_eval_frames(video):
    # seg = 47/4 = 11.75 -> segments (0,12) (12,24) (24,35) (35,47) -> frames 6, 18, 29, 41.
    clip = load_clips(video, [4], 32)[0]
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.float32
    pixels = clip * CLIP_STD + CLIP_MEAN
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)) * 255,
                               LEVEL_STEP * np.array([6, 18, 29, 41]), atol=TOLERANCE)


def test_load_clip_sub_range(video):
    # Frames [8, 16), n = 2: seg = 3.5 -> segments (8,12) (12,15) -> frames 10, 13.
    pixels = load_clips(video, [2], 16, start_frame=8, end_frame=16)[0] * CLIP_STD + CLIP_MEAN
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)) * 255, [50, 65], atol=TOLERANCE)


def test_load_clips_slow_and_fast(video):
    slow, fast = load_clips(video, [4, 16], 32)
    assert slow.shape == (4, 32, 32, 3) and fast.shape == (16, 32, 32, 3)
    np.testing.assert_allclose(slow, load_clips(video, [4], 32)[0])
    np.testing.assert_allclose(fast, load_clips(video, [16], 32)[0])


def test_load_clip_empty_range(video):
    with pytest.raises(ValueError, match=r'grey\.mp4: empty frame range'):
        load_clips(video, [4], 32, start_frame=10, end_frame=10)
