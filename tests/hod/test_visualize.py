"""Visual check: boxes, tracks and narrations drawn on record frames; PNG strips, GIFs and
the HTML index."""
import numpy as np
import pytest
from PIL import Image

from egovideo_jax.hod import visualize
from egovideo_jax.hod.tracks import TRACK_NAMES
from egovideo_jax.records import DatasetWriter, encode_jpeg

NUM_FRAMES = 5


def make_clip(number: int) -> dict:
    """A grey clip: the left hand detected and moving right, the right hand detected in the
    first and last frame (interpolated between), no object."""
    frames = [encode_jpeg(np.full((60, 80, 3), 128, np.uint8)) for _ in range(NUM_FRAMES)]
    steps = np.linspace(0, 0.4, NUM_FRAMES)[:, None]
    boxes = {
        'left_hand': np.concatenate([0.1 + steps, np.full_like(steps, 0.5),
                                     0.3 + steps, np.full_like(steps, 0.8)], 1),
        'right_hand': np.tile([0.6, 0.1, 0.9, 0.4], (NUM_FRAMES, 1)),
        'object': np.zeros((NUM_FRAMES, 4)),
    }
    return {
        'clip_id': f'clip/{number}:0.0-1.0', 'video_id': 'v', 'source': 'test', 'start': 0.0,
        'end': 1.0, 'frames_jpeg': frames,
        'frame_times': np.linspace(0, 0.8, NUM_FRAMES).astype(np.float32),
        'narration': '#C C moves the cup', 'hod': [f'The left hand moves to the right {number}.'],
        'boxes': {name: array.astype(np.float32) for name, array in boxes.items()},
        'box_valid': {'left_hand': np.ones(NUM_FRAMES, np.int32),
                      'right_hand': np.array([1, 2, 2, 2, 1], np.int32),
                      'object': np.zeros(NUM_FRAMES, np.int32)},
        'contact': {side: np.zeros(NUM_FRAMES, np.int32) for side in ('left', 'right')},
    }


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    directory = tmp_path_factory.mktemp('records')
    with DatasetWriter(directory) as writer:
        for number in range(4):
            writer.add(make_clip(number))
    return directory


def has_color(image: Image.Image, color, tolerance: int = 30) -> bool:
    pixels = np.asarray(image.convert('RGB')).reshape(-1, 3).astype(int)
    return bool((np.abs(pixels - np.array(color)).max(axis=1) <= tolerance).any())


def test_annotated_frame_draws_present_tracks_only():
    clip = make_clip(0)
    frame = np.full((60, 80, 3), 128, np.uint8)
    image = visualize.annotate_frame(frame, clip, 3, pixels=120)
    assert image.size == (160, 120)  # short side 120
    assert has_color(image, visualize.TRACK_COLORS['left_hand'])
    assert has_color(image, visualize.TRACK_COLORS['right_hand'])  # dashed, interpolated
    assert not has_color(image, visualize.TRACK_COLORS['object'])
    pixels = np.asarray(image).astype(int)
    left, top = (np.array([0.1 + 0.3, 0.5]) * [160, 120]).round().astype(int)
    assert np.abs(pixels[top + 1, left + 1] - visualize.TRACK_COLORS['left_hand']).max() < 40


def test_render_records_writes_strips_gifs_and_an_index(records, tmp_path):
    index = visualize.render_records(records, tmp_path, num=3)
    html = open(index, encoding='utf-8').read()
    pngs, gifs = sorted(tmp_path.glob('*.png')), sorted(tmp_path.glob('*.gif'))
    assert len(pngs) == len(gifs) == 3
    assert '/' not in pngs[0].name[4:]  # clip ids become safe file names
    for png, gif in zip(pngs, gifs):
        assert png.name in html and gif.name in html
        strip = Image.open(png)
        assert strip.width == NUM_FRAMES * 299 + 4 * (NUM_FRAMES - 1)  # 80x60 frames at 224
        for name in ('left_hand', 'right_hand'):
            assert has_color(strip, visualize.TRACK_COLORS[name])
        with Image.open(gif) as animation:
            assert animation.n_frames == NUM_FRAMES
    assert 'The left hand moves to the right 0.' in html and '#C C moves the cup' in html
    assert 'The left hand moves to the right 3.' in html  # first and last clips are picked


def test_cli(records, tmp_path, capsys):
    visualize.main(['--records', str(records), '--out', str(tmp_path), '--num', '1'])
    assert capsys.readouterr().out.strip().endswith('index.html')
    assert len(list(tmp_path.glob('*.png'))) == 1 and set(TRACK_NAMES) == set(
        visualize.TRACK_COLORS)
