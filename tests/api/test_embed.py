"""The embedding CLI end to end on a tiny random model, and its argument errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.videos import write_grey_video

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = ['C cuts the onion', 'C opens the drawer']
TINY_EMBED_DIM = 32


def run_embed(*args):
    return subprocess.run([sys.executable, '-m', 'egovideo_jax.embed', *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    return write_grey_video(tmp_path_factory.mktemp('embed') / 'clip.mp4', num_frames=20)


@pytest.mark.parametrize('mode', ['slowfast', 'single'])
def test_embed_video_and_texts(tmp_path, video, mode):
    out = tmp_path / 'embeddings.npz'
    result = run_embed('--variant', 'tiny', '--mode', mode, '--video', video,
                       '--text', TEXTS[0], '--text', TEXTS[1], '--out', out)
    assert result.returncode == 0, result.stderr
    assert 'randomly initialised' in result.stderr
    assert f'[1/1] {video}' in result.stdout and f'wrote {out}' in result.stdout

    with np.load(out) as saved:
        videos, texts = saved['video_embeddings'], saved['text_embeddings']
        assert videos.shape == (1, TINY_EMBED_DIM) and texts.shape == (2, TINY_EMBED_DIM)
        np.testing.assert_allclose(np.linalg.norm(videos, axis=-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(texts, axis=-1), 1.0, atol=1e-5)
        assert saved['video_paths'].tolist() == [str(video)]
        assert saved['texts'].tolist() == TEXTS
        assert saved['variant'].item() == 'tiny' and saved['mode'].item() == mode


def test_missing_video_fails_before_loading(tmp_path, video):
    missing = tmp_path / 'nowhere.mp4'
    out = tmp_path / 'embeddings.npz'
    result = run_embed('--variant', 'tiny', '--video', video, '--video', missing,
                       '--text', TEXTS[0], '--out', out)
    assert result.returncode != 0
    assert f'video file not found: {missing}' in result.stderr
    assert 'randomly initialised' not in result.stderr  # the model was never loaded
    assert not out.exists()


@pytest.mark.parametrize('args', [
    ['--variant', 'tiny'],                                           # nothing to embed
    ['--variant', 'tiny', '--mode', 'single', '--text', 'x', '--fast-frames', '8'],
    ['--variant', 'nope', '--text', 'x'],
])
def test_argument_errors(tmp_path, args):
    result = run_embed(*args, '--out', tmp_path / 'embeddings.npz')
    assert result.returncode == 2 and 'error:' in result.stderr
