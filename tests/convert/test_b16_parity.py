"""Real-size parity: B/16 slow/fast (4 + 16 frames) against the independent PyTorch reference."""
import numpy as np
import pytest
import torch

from egovideo_jax import load
from egovideo_jax.api import EgoVideoModel
from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.encoder import init_params
from tests.helpers.params import perturbed
from tests.helpers.parity import (
    assert_close,
    flax_embeddings,
    make_inputs,
    reference_from_state,
)


@pytest.mark.slow
def test_b16_slowfast_export_import_parity(tmp_path):
    config = get_model_config('B/16', 'slowfast')
    model = EgoVideoModel(config, perturbed(init_params(config), seed=0, scale=0.01))
    path = tmp_path / 'b16.pt'
    model.export_torch(path)
    state = {k.removeprefix('module.'): v.numpy()
             for k, v in torch.load(path, weights_only=True)['state_dict'].items()}
    assert len(state) == 568
    ref = reference_from_state(state, 'B/16', 'slowfast')
    slow, fast, tokens = make_inputs(config, batch=1)
    with torch.no_grad():
        ref_video = ref.encode_video(torch.from_numpy(slow), torch.from_numpy(fast)).numpy()
        ref_single = ref.visual(torch.from_numpy(fast)).numpy()  # 16 frames, no adapters
        ref_text = ref.encode_text(torch.from_numpy(tokens).long()).numpy()
    video, text = flax_embeddings(model, slow, fast, tokens)
    assert_close(video, ref_video)
    assert_close(text, ref_text)
    single = load(path, variant='B/16', mode='single', verbose=False)
    assert len(single.report.unexpected) == 12 * 9 + 1  # adapters + fusion, reported
    ours_single = np.asarray(single.module.apply(
        {'params': single.params}, fast, method=lambda m, x: m.visual(x)))
    np.testing.assert_allclose(ours_single, ref_single, rtol=0, atol=1e-4)
    back = load(path, variant='B/16', mode='slowfast', verbose=False)
    for key, value in back.reference_state().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
