"""Inputs and embeddings for parity checks of our model against the independent PyTorch reference."""
import numpy as np
import torch

from tests.helpers.torch_reference import RefConfig, RefEgoVideo

TOL = 1e-5


REF_CONFIGS = {'tiny': RefConfig.tiny, 'B/16': RefConfig.b16}


def make_inputs(config, batch=2, seed=0):
    gen = np.random.default_rng(seed)
    size = config.vision.image_size
    slow = gen.standard_normal((batch, config.vision.num_frames, size, size, 3)).astype(np.float32)
    fast = gen.standard_normal((batch, config.fast_frames, size, size, 3)).astype(np.float32)
    tokens = np.zeros((batch, 77), np.int32)
    lengths = gen.integers(3, 20, batch)
    for row, length in enumerate(lengths):
        tokens[row, 0] = 49406
        tokens[row, 1:length] = gen.integers(1, 49000, length - 1)
        tokens[row, length] = 49407
    return slow, fast, tokens


def reference_from_state(state, variant, mode):
    ref = RefEgoVideo(REF_CONFIGS[variant](), mode)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return ref.eval()


def torch_embeddings(ref, mode, slow, fast, tokens):
    with torch.no_grad():
        video = (ref.encode_video(torch.from_numpy(slow), torch.from_numpy(fast))
                 if mode == 'slowfast' else ref.encode_video(torch.from_numpy(slow)))
        text = ref.encode_text(torch.from_numpy(tokens).long())
    return video.numpy(), text.numpy()


def flax_embeddings(model, slow, fast, tokens):
    video = (model.encode_video(slow, fast) if model.config.mode == 'slowfast'
             else model.encode_video(slow))
    return video, model.encode_text(tokens)


def assert_close(a, b, tol=TOL):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=tol)
