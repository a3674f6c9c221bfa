"""PyTorch interop: export to the reference layout, import reference/OpenAI CLIP weights, and
parity with the independent PyTorch reference in tests/helpers/torch_reference.py (fp32, 1e-5)."""

import jax
import numpy as np
import pytest
import torch

from egovideo_jax import load
from egovideo_jax.api import EgoVideoModel
from egovideo_jax.convert import mapping, torch_io, weights
from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.encoder import init_params
from egovideo_jax.model.layout import stack_layers
from tests.helpers.params import perturbed
from tests.helpers.parity import (
    assert_close,
    flax_embeddings,
    make_inputs,
    reference_from_state,
    torch_embeddings,
)
from tests.helpers.torch_reference import RefConfig, RefEgoVideo


def random_flax_model(variant, mode, seed=0):
    config = get_model_config(variant, mode)
    return EgoVideoModel(config, perturbed(init_params(config, seed), seed))




@pytest.mark.parametrize('mode', ['single', 'slowfast'])
def test_export_loads_strict_and_matches_reference(mode, tmp_path):
    model = random_flax_model('tiny', mode)
    path = tmp_path / 'model.pt'
    model.export_torch(path, epoch=3)
    container = torch.load(path, weights_only=True)
    assert container['epoch'] == 3
    assert all(k.startswith('module.') for k in container['state_dict'])
    state = {k.removeprefix('module.'): v.numpy() for k, v in container['state_dict'].items()}
    ref = reference_from_state(state, 'tiny', mode)
    slow, fast, tokens = make_inputs(model.config)
    for ours, theirs in zip(flax_embeddings(model, slow, fast, tokens),
                            torch_embeddings(ref, mode, slow, fast, tokens)):
        assert_close(ours, theirs)


def test_single_branch_parity_with_interpolated_temporal_table():
    model = random_flax_model('tiny', 'single')
    ref = reference_from_state(model.reference_state(), 'tiny', 'single')
    _, sixteen_frames, tokens = make_inputs(model.config)
    ours = model.encode_video(sixteen_frames)
    theirs, _ = torch_embeddings(ref, 'single', sixteen_frames, None, tokens)
    assert_close(ours, theirs)


@pytest.mark.parametrize('mode', ['single', 'slowfast'])
def test_import_reference_matches(mode, tmp_path):
    torch.manual_seed(0)
    ref = RefEgoVideo(RefConfig.tiny(), mode).eval()
    with torch.no_grad():  # move zero-initialised parts (adapters, temporal table) off zero
        for tensor in ref.state_dict().values():
            tensor.add_(0.05 * torch.randn_like(tensor))
    path = tmp_path / 'reference.pt'
    torch.save({'epoch': 1, 'state_dict': {'module.' + k: v for k, v in ref.state_dict().items()}},
               path)
    model = load(path, variant='tiny', mode=mode, verbose=False)
    assert model.report.new == [] and model.report.unexpected == []
    slow, fast, tokens = make_inputs(model.config, seed=1)
    for ours, theirs in zip(flax_embeddings(model, slow, fast, tokens),
                            torch_embeddings(ref, mode, slow, fast, tokens)):
        assert_close(ours, theirs)


@pytest.mark.parametrize('mode', ['single', 'slowfast'])
@pytest.mark.parametrize('fmt', ['pt', 'safetensors'])
def test_round_trip_is_bit_exact(mode, fmt, tmp_path):
    model = random_flax_model('tiny', mode, seed=2)
    path = tmp_path / f'model.{fmt}'
    (model.export_torch if fmt == 'pt' else model.export_safetensors)(path)
    back = load(path, variant='tiny', mode=mode, seed=5, verbose=False)
    expected = jax.tree_util.tree_leaves_with_path(model.params)
    actual = dict(jax.tree_util.tree_leaves_with_path(back.params))
    assert len(expected) == len(actual)
    for path_, leaf in expected:
        np.testing.assert_array_equal(np.asarray(actual[path_]), np.asarray(leaf),
                                      err_msg=jax.tree_util.keystr(path_))


def test_scanned_layout_converts_to_the_same_reference_state():
    config = get_model_config('tiny', 'slowfast')
    params = perturbed(init_params(config), 3)
    unrolled = weights.to_reference_state(params, config)
    scanned = weights.to_reference_state(stack_layers(params), config)
    assert unrolled.keys() == scanned.keys()
    for key in unrolled:
        np.testing.assert_array_equal(unrolled[key], scanned[key])
    scanned_init = init_params(config, scan_layers=True)
    restored, _ = weights.from_reference_state(unrolled, config, scanned_init)
    for (p, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(restored),
                              jax.tree_util.tree_leaves_with_path(stack_layers(params))):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(p))


def test_export_key_layout_and_shapes():
    config = get_model_config('tiny', 'slowfast')
    state = weights.to_reference_state(init_params(config), config)
    ref_state = RefEgoVideo(RefConfig.tiny(), 'slowfast').state_dict()
    assert set(state) == set(ref_state)
    for key, tensor in ref_state.items():
        assert state[key].shape == tuple(tensor.shape), key
        assert state[key].dtype == np.float32


def test_key_counts_match_spec_for_real_variants():
    counts = {}
    for variant in ('B/16', 'L/14-336'):
        for mode in ('single', 'slowfast'):
            config = get_model_config(variant, mode)
            counts[variant, mode] = (len(mapping.reference_entries(config))
                                     + len(mapping.unused_reference_shapes(config)))
    assert counts == {('B/16', 'single'): 303, ('B/16', 'slowfast'): 568,
                      ('L/14-336', 'single'): 447, ('L/14-336', 'slowfast'): 976}


def _openai_clip_style(state):
    """Rename a reference state dict the way OpenAI CLIP spells it."""
    out = {}
    for key, value in state.items():
        if key.startswith('textual.'):
            key = key.removeprefix('textual.')
        key = (key.replace('visual.image_projection', 'visual.proj')
               .replace('attn.Wqkv.weight', 'attn.in_proj_weight')
               .replace('attn.Wqkv.bias', 'attn.in_proj_bias')
               .replace('mlp.fc1.', 'mlp.c_fc.').replace('mlp.fc2.', 'mlp.c_proj.'))
        if key == 'visual.conv1.weight':
            value = value.reshape(value.shape[0], 3, 16, 16)
        out[key] = value
    out.pop('visual.temporal_embedding')  # CLIP is an image model
    return out


def test_import_openai_clip_reports_new_parameters(tmp_path):
    config = get_model_config('tiny', 'slowfast')
    source = weights.to_reference_state(perturbed(init_params(config), 4), config)
    clip_state = {k: v for k, v in _openai_clip_style(source).items()
                  if 'adapter' not in k and k != 'slowfast_projection'}
    path = tmp_path / 'clip.pt'
    torch.save({k: torch.from_numpy(v) for k, v in clip_state.items()}, path)
    model = load(path, variant='tiny', mode='slowfast', verbose=False)
    report = model.report
    assert report.source_format == 'OpenAI CLIP'
    assert 'visual/temporal_embedding' in report.new
    assert 'slowfast_projection' in report.new
    assert any('/adapter/' in name for name in report.new)
    assert report.unexpected == []
    exported = model.reference_state()
    for key in ('visual.conv1.weight', 'visual.image_projection', 'textual.text_projection',
                'visual.transformer.resblocks.1.attn.Wqkv.weight',
                'textual.transformer.resblocks.0.mlp.c_fc.weight'):
        np.testing.assert_array_equal(exported[key], source[key], err_msg=key)
    assert 'new (left at initialisation)' in report.summary()


def test_non_flash_naming_without_module_prefix(tmp_path):
    config = get_model_config('tiny', 'single')
    source = weights.to_reference_state(perturbed(init_params(config), 6), config)
    renamed = {k.replace('attn.Wqkv.weight', 'attn.in_proj_weight')
               .replace('attn.Wqkv.bias', 'attn.in_proj_bias')
               .replace('mlp.fc1.', 'mlp.c_fc.').replace('mlp.fc2.', 'mlp.c_proj.'): v
               for k, v in source.items()}
    path = tmp_path / 'bare.pt'
    torch.save({k: torch.from_numpy(v) for k, v in renamed.items()}, path)
    model = load(path, variant='tiny', mode='single', verbose=False)
    assert len(model.report.loaded) == len(source)
    exported = model.reference_state()
    for key in source:
        np.testing.assert_array_equal(exported[key], source[key], err_msg=key)


class Payload:
    def __reduce__(self):
        return (print, ('this would have run',))


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'extra': Payload()}, path)
    with pytest.raises(ValueError, match='refusing to load'):
        torch_io.read_state_dict(path)


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        torch_io.read_state_dict(tmp_path / 'missing.pt')
    odd = tmp_path / 'weights.h5'
    odd.write_bytes(b'x')
    with pytest.raises(ValueError, match='unknown checkpoint format'):
        torch_io.read_state_dict(odd)
    config = get_model_config('tiny', 'single')
    state = weights.to_reference_state(init_params(config), config)
    state['visual.positional_embedding'] = np.zeros((7, 64), np.float32)
    with pytest.raises(ValueError, match="visual.positional_embedding.*\\(7, 64\\)"):
        weights.from_reference_state(state, config, init_params(config))
