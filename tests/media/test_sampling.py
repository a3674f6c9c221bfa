"""Segment sampler known answers (worked by hand from the spec formula) and eval transforms."""

import numpy as np
import pytest

from egovideo_jax.media.sampling import sample_eval, sample_train, segment_bounds
from egovideo_jax.media.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    normalize,
    resize_short_side_center_crop,
)


# seg = 31/4 = 7.75; boundaries 0, 7.75, 15.5, 23.25, 31 round (half even) to 0, 8, 16, 23, 31.
def test_four_of_thirty_two():
    assert segment_bounds(0, 32, 4) == [(0, 8), (8, 16), (16, 23), (23, 31)]
    np.testing.assert_array_equal(sample_eval(0, 32, 4), [4, 12, 19, 27])


# seg = 31/16 = 1.9375; boundaries 0, 1.9375, 3.875, ..., 15.5, 17.4375, ..., 31 round to
# 0 2 4 6 8 10 12 14 16 17 19 21 23 25 27 29 31 (15.5 -> 16, half even).
def test_sixteen_of_thirty_two():
    edges = [0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 19, 21, 23, 25, 27, 29, 31]
    assert segment_bounds(0, 32, 16) == list(zip(edges[:-1], edges[1:]))
    np.testing.assert_array_equal(sample_eval(0, 32, 16),
                                  [1, 3, 5, 7, 9, 11, 13, 15, 16, 18, 20, 22, 24, 26, 28, 30])


# seg = 47/4 = 11.75; boundaries 0, 11.75, 23.5, 35.25, 47 round to 0, 12, 24, 35, 47.
def test_offset_start():
    assert segment_bounds(100, 148, 4) == [(100, 112), (112, 124), (124, 135), (135, 147)]
    np.testing.assert_array_equal(sample_eval(100, 148, 4), [106, 118, 129, 141])


# Three frames, four samples: seg = 2/4 = 0.5; boundaries 0, 0.5, 1, 1.5, 2 round to
# 0, 0, 1, 2, 2, so positions repeat.
def test_clip_shorter_than_n():
    assert segment_bounds(10, 13, 4) == [(10, 10), (10, 11), (11, 12), (12, 12)]
    np.testing.assert_array_equal(sample_eval(10, 13, 4), [10, 10, 11, 12])


def test_single_frame_clip():
    assert segment_bounds(5, 6, 3) == [(5, 5)] * 3
    np.testing.assert_array_equal(sample_train(5, 6, 3, np.random.default_rng(0)), [5, 5, 5])


@pytest.mark.parametrize('start, end, n', [(0, 32, 4), (0, 32, 16), (7, 300, 16), (3, 5, 8)])
def test_train_samples_lie_in_segments(start, end, n):
    rng = np.random.default_rng(0)
    lows, highs = np.array(segment_bounds(start, end, n)).T
    draws = np.stack([sample_train(start, end, n, rng) for _ in range(200)])
    assert draws.dtype.kind == 'i'
    assert np.all(draws >= lows) and np.all(draws <= highs)
    assert np.all(draws < end)
    # Both inclusive ends are reachable.
    assert np.all((draws == lows).any(axis=0)) and np.all((draws == highs).any(axis=0))


def test_train_samples_reproducible():
    first = sample_train(0, 100, 16, np.random.default_rng(42))
    again = sample_train(0, 100, 16, np.random.default_rng(42))
    np.testing.assert_array_equal(first, again)
    other = [sample_train(0, 100, 16, np.random.default_rng(seed)) for seed in range(5)]
    assert any(not np.array_equal(first, draw) for draw in other)


@pytest.mark.parametrize('start, end, n', [(5, 5, 4), (6, 5, 4), (0, 10, 0)])
def test_invalid_ranges(start, end, n):
    with pytest.raises(ValueError):
        segment_bounds(start, end, n)


@pytest.mark.parametrize('height, width', [(48, 64), (64, 48), (32, 32), (17, 100)])
def test_resize_crop_shape(height, width):
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = resize_short_side_center_crop(frame, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def _coordinate_image(height, width):
    """R = column, G = row, B = 7: every pixel says where it came from."""
    rows, columns = np.mgrid[:height, :width]
    return np.stack([columns, rows, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def test_center_crop_landscape_without_resize():
    image = _coordinate_image(32, 64)  # short side already 32: crop columns 16..47
    np.testing.assert_array_equal(resize_short_side_center_crop(image, 32), image[:, 16:48])


def test_center_crop_portrait_without_resize():
    image = _coordinate_image(70, 32)  # top = (70 - 32) / 2 = 19
    np.testing.assert_array_equal(resize_short_side_center_crop(image, 32), image[19:51])


def test_resize_then_crop_keeps_layout():
    # 64x128, black left half, white right half -> 32x64 -> columns 16..47: the edge lands at
    # column 16 of the crop. Bicubic only blurs a few pixels around it.
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, 64:] = 255
    out = resize_short_side_center_crop(image, 32)
    assert np.all(out[:, :12] == 0)
    assert np.all(out[:, 20:] == 255)


def test_resize_keeps_solid_colour():
    image = np.broadcast_to(np.array([10, 200, 90], np.uint8), (50, 75, 3)).copy()
    out = resize_short_side_center_crop(image, 32)
    np.testing.assert_allclose(out.astype(int), np.broadcast_to([10, 200, 90], out.shape), atol=1)


def test_resize_rejects_bad_frames():
    with pytest.raises(ValueError):
        resize_short_side_center_crop(np.zeros((8, 8), np.uint8), 4)
    with pytest.raises(ValueError):
        resize_short_side_center_crop(np.zeros((8, 8, 3), np.float32), 4)


def test_normalize_known_pixels():
    pixels = np.array([[[0, 255, 51]]], np.uint8)  # 51 / 255 = 0.2
    expected = np.array([(0.0 - 0.48145466) / 0.26862954,
                         (1.0 - 0.4578275) / 0.26130258,
                         (0.2 - 0.40821073) / 0.27577711], np.float32)
    out = normalize(pixels)
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_normalize_float_input_is_already_in_unit_range():
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    np.testing.assert_allclose(normalize(frames), normalize(frames / 255.0), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(normalize(np.broadcast_to(CLIP_MEAN, (3, 3))), 0.0, atol=1e-7)
    np.testing.assert_allclose(normalize(CLIP_MEAN + CLIP_STD), 1.0, atol=1e-6)


def test_normalize_rejects_non_rgb():
    with pytest.raises(ValueError):
        normalize(np.zeros((4, 4), np.uint8))
