"""Checks that the PyTorch reference matches the spec's key layout and forward conventions."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.torch_reference import (
    MotionAdapter,
    RefConfig,
    RefEgoVideo,
    RefVisionTransformer,
    TextAttention,
    resize_temporal_table,
)

CONFIGS = {"b16": RefConfig.b16, "l14_336": RefConfig.l14_336}


def meta_model(name, mode):
    # Real-size models on the meta device: shapes and keys without allocating weights.
    with torch.device("meta"):
        return RefEgoVideo(CONFIGS[name](), mode)


def parameter_shapes(name, mode):
    return {key: tuple(value.shape) for key, value in meta_model(name, mode).state_dict().items()}


def tiny_video(frames, batch=2, seed=0):
    cfg = RefConfig.tiny()
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, cfg.image_size, cfg.image_size, 3, generator=generator)


def tiny_tokens():
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[0, :5] = torch.tensor([49406, 320, 1125, 539, 49407])
    tokens[1, :3] = torch.tensor([49406, 2368, 49407])
    return tokens


@pytest.mark.parametrize("name,mode,expected", [
    ("b16", "single", 303), ("b16", "slowfast", 568),
    ("l14_336", "single", 447), ("l14_336", "slowfast", 976),
])
def test_state_dict_key_count(name, mode, expected):
    model = meta_model(name, mode)
    state = model.state_dict()
    assert len(state) == expected
    # Everything checkpointed is a parameter: no stray buffers (e.g. a stored causal mask).
    assert set(state) == {key for key, _ in model.named_parameters()}


def test_b16_shapes_match_spec():
    shapes = parameter_shapes("b16", "slowfast")
    block = "visual.transformer.resblocks.0."
    expected = {
        "logit_scale": (),
        "slowfast_projection": (1024, 512),
        "visual.conv1.weight": (768, 768),
        "visual.class_embedding": (768,),
        "visual.positional_embedding": (197, 768),
        "visual.temporal_embedding": (4, 768),
        "visual.image_projection": (768, 512),
        block + "attn.Wqkv.weight": (2304, 768),
        block + "attn.Wqkv.bias": (2304,),
        block + "attn.out_proj.weight": (768, 768),
        block + "mlp.fc1.weight": (3072, 768),
        block + "mlp.fc2.weight": (768, 3072),
        block + "adapter.down_proj.weight": (384, 768),
        block + "adapter.up_proj.weight": (768, 384),
        block + "adapter.dwconv.weight": (384, 1, 3),
        block + "adapter.conv.weight": (384, 384, 1),
        block + "adapter.gamma": (1,),
        block + "adapter.conv2d.weight": (384, 384, 3, 3),
        block + "adapter_2.conv2d.bias": (384,),
        "textual.token_embedding.weight": (49408, 512),
        "textual.positional_embedding": (77, 512),
        "textual.transformer.resblocks.0.attn.in_proj_weight": (1536, 512),
        "textual.transformer.resblocks.0.attn.in_proj_bias": (1536,),
        "textual.transformer.resblocks.0.mlp.c_fc.weight": (2048, 512),
        "textual.transformer.resblocks.0.mlp.c_proj.weight": (512, 2048),
        "textual.ln_final.weight": (512,),
        "textual.text_projection": (512, 512),
    }
    assert {key: shapes[key] for key in expected} == expected


def test_l14_shapes_match_spec():
    shapes = parameter_shapes("l14_336", "slowfast")
    block = "visual.transformer.resblocks.23."
    assert shapes["visual.conv1.weight"] == (1024, 3 * 14 * 14)
    assert shapes["visual.positional_embedding"] == (1 + 24 * 24, 1024)
    assert shapes[block + "adapter.down_proj.weight"] == (512, 1024)
    assert shapes[block + "adapter.conv2d.weight"] == (384, 384, 3, 3)
    assert shapes["textual.transformer.resblocks.11.attn.in_proj_weight"] == (2304, 768)
    assert shapes["textual.text_projection"] == (768, 512)
    assert shapes["slowfast_projection"] == (1024, 512)


def test_logit_scale_init():
    model = RefEgoVideo(RefConfig.tiny())
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


@pytest.mark.parametrize("frames", [4, 16])
def test_tiny_single_forward(frames):
    model = RefEgoVideo(RefConfig.tiny(), "single")
    video_embedding = model.encode_video(tiny_video(frames))
    text_embedding = model.encode_text(tiny_tokens())
    for embedding in (video_embedding, text_embedding):
        assert embedding.shape == (2, 32)
        torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))


def test_tiny_slowfast_forward():
    model = RefEgoVideo(RefConfig.tiny(), "slowfast")
    embedding = model.encode_video(tiny_video(4), tiny_video(16, seed=1))
    assert embedding.shape == (2, 32)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))


def test_zero_initialised_adapters_are_identity():
    torch.manual_seed(0)
    visual = RefVisionTransformer(RefConfig.tiny(), with_adapters=True)
    fast = tiny_video(16)
    with_adapters = visual(fast, use_adapters=True)
    torch.testing.assert_close(with_adapters, visual(fast, use_adapters=False), rtol=0, atol=0)

    # Once up_proj is non-zero the adapter after block 0 reaches the pooled class token
    # through block 1's attention, so the adapters really are in the forward path.
    torch.nn.init.normal_(visual.transformer.resblocks[0].adapter.up_proj.weight)
    assert not torch.allclose(visual(fast, use_adapters=True), with_adapters)


def test_adapter_mixes_only_along_time_and_skips_class_token():
    torch.manual_seed(0)
    frames, spatial, width = 5, 3, 8
    adapter = MotionAdapter(width)
    torch.nn.init.normal_(adapter.up_proj.weight)
    x = torch.randn(1, 1 + frames * spatial, width)
    perturbed = x.clone()
    perturbed[0, 1 + 2 * spatial + 1] += 1.0  # frame 2, spatial location 1

    change = (adapter(perturbed, frames) - adapter(x, frames)).abs().sum(-1)[0]
    assert change[0] == 0  # class token untouched
    changed = {divmod(index, spatial) for index in (change[1:] > 0).nonzero().flatten().tolist()}
    # Kernel 3 along time at the same spatial location: frames 1..3 of location 1 only.
    assert changed == {(1, 1), (2, 1), (3, 1)}
    torch.testing.assert_close(adapter(x, frames)[:, 0], x[:, 0], rtol=0, atol=0)


def test_patch_linear_matches_conv_on_channels_first_frames():
    torch.manual_seed(0)
    cfg = RefConfig.tiny()
    visual = RefVisionTransformer(cfg, with_adapters=False)
    video = tiny_video(3)
    p = cfg.patch_size
    conv_weight = visual.conv1.weight.reshape(cfg.vision_width, 3, p, p)
    frames = video.flatten(0, 1).permute(0, 3, 1, 2)  # [B*T, 3, H, W]
    conv_tokens = F.conv2d(frames, conv_weight, stride=p).flatten(2).transpose(1, 2)
    expected = conv_tokens.reshape(2, -1, cfg.vision_width)  # (t, h, w) order per video
    torch.testing.assert_close(visual.conv1(visual.patchify(video)), expected)


def test_temporal_table_resize_known_answer():
    table = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 3)  # temporal[t] = t
    # Source coordinate (i + 0.5) * 4/16 - 0.5, clamped to [0, 3].
    expected = torch.tensor([0, 0, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375,
                             1.625, 1.875, 2.125, 2.375, 2.625, 2.875, 3, 3])
    resized = resize_temporal_table(table, 16)
    assert resized.shape == (16, 3)
    torch.testing.assert_close(resized, expected[:, None].repeat(1, 3))
    assert resize_temporal_table(table, 4) is table


def test_text_pooling_is_causal_at_end_of_text():
    torch.manual_seed(0)
    model = RefEgoVideo(RefConfig.tiny())
    tokens = tiny_tokens()
    padded_differently = tokens.clone()
    padded_differently[:, 70:] = 5  # after the end-of-text token, invisible to it
    torch.testing.assert_close(model.encode_text(padded_differently), model.encode_text(tokens))
    changed_before_eot = tokens.clone()
    changed_before_eot[0, 1] = 7
    assert not torch.allclose(model.encode_text(changed_before_eot)[0],
                              model.encode_text(tokens)[0])


def test_hand_written_attention_matches_torch_multihead_attention():
    # Confirms the packed [q; k; v] head-major layout and the causal mask convention.
    torch.manual_seed(0)
    width, heads, length = 16, 4, 6
    attention = TextAttention(width, heads)
    torch.nn.init.normal_(attention.in_proj_bias)
    torch_attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    torch_attention.load_state_dict(attention.state_dict())
    x = torch.randn(2, length, width)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    expected, _ = torch_attention(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(attention(x), expected)
