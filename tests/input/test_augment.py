"""Augmentation: random resized crop, flips, and left/right swapping of text and tracks."""
import numpy as np
import pytest

from egovideo_jax.input import augment
from egovideo_jax.media import transforms


@pytest.mark.parametrize('height,width', [(40, 48), (256, 341), (320, 180), (7, 5)])
def test_crop_params_within_image_scale_and_ratio(height, width):
    fractions = []
    for seed in range(300):
        top, left, crop_h, crop_w = augment.random_resized_crop_params(
            height, width, np.random.default_rng(seed), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
        assert 0 <= top and top + crop_h <= height and crop_h > 0
        assert 0 <= left and left + crop_w <= width and crop_w > 0
        # Rounding each side to whole pixels moves area and ratio by at most half a pixel.
        assert crop_h * crop_w >= 0.5 * height * width - (crop_h + crop_w)
        assert 3 / 4 * crop_h - 1 <= crop_w <= 4 / 3 * crop_h + 1.2
        fractions.append(crop_h * crop_w / (height * width))
    if min(height, width) >= 40 and 3 / 4 <= width / height <= 4 / 3:  # whole range reachable
        assert min(fractions) < 0.55 and max(fractions) > 0.95


def test_crop_params_fall_back_to_centre_crop_like_torchvision():
    rng = np.random.default_rng(0)
    # No crop with ratio in [3/4, 4/3] and >= half the area fits: the clamped centre crop.
    assert augment.random_resized_crop_params(1, 1000, rng) == (0, 499, 1, 1)
    assert augment.random_resized_crop_params(1000, 1, rng) == (499, 0, 1, 1)
    assert augment.random_resized_crop_params(10, 200, rng) == (0, (200 - 13) // 2, 10, 13)
    # Scale above 1 never fits; an in-range ratio falls back to the whole image.
    assert augment.random_resized_crop_params(30, 36, rng, scale=(2.0, 3.0)) == (0, 0, 30, 36)


def test_crop_params_are_deterministic_in_the_rng():
    first = augment.random_resized_crop_params(256, 341, np.random.default_rng(7))
    second = augment.random_resized_crop_params(256, 341, np.random.default_rng(7))
    assert first == second


def test_one_crop_shared_by_all_frames():
    base = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    frames = np.stack([base, base, base])
    out = augment.random_resized_crop(frames, 32, np.random.default_rng(3))
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    crop = augment.random_resized_crop_params(40, 48, np.random.default_rng(3))
    np.testing.assert_array_equal(out, augment.resized_crop(frames, crop, 32))


def test_resized_crop_at_native_size_is_the_crop():
    frames = np.random.default_rng(1).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    crop = augment.CropBox(top=5, left=9, height=30, width=30)
    np.testing.assert_array_equal(augment.resized_crop(frames, crop, 30),
                                  frames[:, 5:35, 9:39])


def test_center_crop_matches_the_eval_transform():
    frames = np.random.default_rng(2).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    out = augment.center_crop(frames, 32)
    for frame, cropped in zip(frames, out):
        np.testing.assert_array_equal(cropped, transforms.resize_short_side_center_crop(frame, 32))


def test_hflip_known_answer_and_involution():
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    flipped = augment.hflip(frames)
    np.testing.assert_array_equal(flipped[1, 2, 0], frames[1, 2, 3])
    np.testing.assert_array_equal(flipped[0, 1, 3], frames[0, 1, 0])
    np.testing.assert_array_equal(augment.hflip(flipped), frames)


@pytest.mark.parametrize('text,expected', [
    ('C picks up the cup with the left hand, then the right hand releases it',
     'C picks up the cup with the right hand, then the left hand releases it'),
    ('Left hand moves RIGHT; the left-hand grip tightens',
     'Right hand moves LEFT; the right-hand grip tightens'),
    ('right.Left', 'left.Right'),
    ('leftover bright upright alright lefty', 'leftover bright upright alright lefty'),
    ('', ''),
])
def test_swap_sides_known_answers(text, expected):
    assert augment.swap_sides(text) == expected
    assert augment.swap_sides(expected) == text
