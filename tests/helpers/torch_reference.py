"""Independent PyTorch reference of EgoVideo, written only from the model spec
(shared/specs/model.md).

Used by parity tests: it reproduces the reference state_dict key layout exactly, so a checkpoint
exported by our converter must load here with ``strict=True``, and its forward pass is the
function our Flax model must match. Attention is written out by hand (no
``nn.MultiheadAttention`` / ``scaled_dot_product_attention``) so the reference shares no code
path with the implementations under test.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

VISION_LN_EPS = 1e-6
TEXT_LN_EPS = 1e-5
# The reference constructs each adapter's unused conv2d at 384 channels whatever the width.
ADAPTER_CONV2D_CHANNELS = 384
INIT_STD = 0.02


@dataclasses.dataclass
class RefConfig:
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    num_frames: int  # T0: length of the temporal table (frames at training time)
    text_width: int
    text_heads: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 512

    @property
    def patches_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def b16(cls) -> "RefConfig":
        return cls(image_size=224, patch_size=16, vision_width=768, vision_layers=12,
                   vision_heads=12, vision_mlp=3072, num_frames=4,
                   text_width=512, text_heads=8, text_layers=12, embed_dim=512)

    @classmethod
    def l14_336(cls) -> "RefConfig":
        return cls(image_size=336, patch_size=14, vision_width=1024, vision_layers=24,
                   vision_heads=16, vision_mlp=4096, num_frames=4,
                   text_width=768, text_heads=12, text_layers=12, embed_dim=512)

    @classmethod
    def tiny(cls) -> "RefConfig":
        return cls(image_size=32, patch_size=16, vision_width=64, vision_layers=2,
                   vision_heads=4, vision_mlp=128, num_frames=4,
                   text_width=64, text_heads=4, text_layers=2, embed_dim=32)


def multi_head_attention(x, qkv_weight, qkv_bias, out_proj: nn.Linear, heads: int, causal: bool):
    """Packed-qkv attention; rows of ``qkv_weight`` are [q; k; v], each head-major."""
    batch, length, width = x.shape
    head_dim = width // heads
    qkv = F.linear(x, qkv_weight, qkv_bias)
    # [B, L, 3, heads, hd] -> [3, B, heads, L, hd]
    qkv = qkv.reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if causal:
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    context = scores.softmax(dim=-1) @ v  # [B, heads, L, hd]
    context = context.transpose(1, 2).reshape(batch, length, width)
    return out_proj(context)


class VisionAttention(nn.Module):
    """Flash-attention naming of the slow/fast reference: ``Wqkv`` and ``out_proj``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.Wqkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        return multi_head_attention(x, self.Wqkv.weight, self.Wqkv.bias, self.out_proj,
                                    self.heads, causal=False)


class TextAttention(nn.Module):
    """``nn.MultiheadAttention`` naming (``in_proj_weight``/``in_proj_bias``), causal."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width).normal_(std=INIT_STD))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        return multi_head_attention(x, self.in_proj_weight, self.in_proj_bias, self.out_proj,
                                    self.heads, causal=True)


class VisionMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TextMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class MotionAdapter(nn.Module):
    """Temporal bottleneck on patch tokens; identity at init because ``up_proj`` is zero."""

    def __init__(self, width: int):
        super().__init__()
        hidden = width // 2
        self.down_proj = nn.Linear(width, hidden)
        self.up_proj = nn.Linear(hidden, width)
        self.dwconv = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.gamma = nn.Parameter(torch.ones(1))
        self.conv2d = nn.Conv2d(ADAPTER_CONV2D_CHANNELS, ADAPTER_CONV2D_CHANNELS, kernel_size=3)
        nn.init.trunc_normal_(self.down_proj.weight, std=INIT_STD)
        nn.init.zeros_(self.down_proj.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)
        nn.init.normal_(self.dwconv.weight, std=math.sqrt(2.0 / 3))
        nn.init.zeros_(self.dwconv.bias)
        nn.init.normal_(self.conv.weight, std=math.sqrt(2.0 / hidden))
        nn.init.zeros_(self.conv.bias)

    def forward(self, x, num_frames: int):
        """x: [B, 1 + T*P, D]; the class token (index 0) passes through unchanged."""
        cls_token, tokens = x[:, :1], x[:, 1:]
        batch, _, width = tokens.shape
        spatial = tokens.shape[1] // num_frames
        z = F.gelu(self.down_proj(tokens))
        hidden = z.shape[-1]
        # Convolve along T independently at each spatial location: [B*P, H, T].
        z_time = z.reshape(batch, num_frames, spatial, hidden).permute(0, 2, 3, 1)
        z_time = z_time.reshape(batch * spatial, hidden, num_frames)
        a = self.conv(self.dwconv(z_time))
        a = a.reshape(batch, spatial, hidden, num_frames).permute(0, 3, 1, 2)
        a = a.reshape(batch, num_frames * spatial, hidden)
        tokens = tokens + self.gamma * self.up_proj(z + a)
        return torch.cat([cls_token, tokens], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, attn: nn.Module, mlp: nn.Module, width: int, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = attn
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionBlock(ResidualBlock):
    def __init__(self, cfg: RefConfig, with_adapters: bool):
        width = cfg.vision_width
        super().__init__(VisionAttention(width, cfg.vision_heads),
                         VisionMlp(width, cfg.vision_mlp), width, VISION_LN_EPS)
        if with_adapters:
            self.adapter = MotionAdapter(width)
            # Constructed (and checkpointed) by the reference but never used by its forward.
            self.adapter_2 = MotionAdapter(width)


class Transformer(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)


def resize_temporal_table(temporal, num_frames: int):
    """Linear resize along time (half-pixel centres, clamped edges): [T0, D] -> [T, D]."""
    if temporal.shape[0] == num_frames:
        return temporal
    resized = F.interpolate(temporal[None, None], size=(num_frames, temporal.shape[1]),
                            mode="bilinear", align_corners=False)
    return resized[0, 0]


class RefVisionTransformer(nn.Module):
    def __init__(self, cfg: RefConfig, with_adapters: bool):
        super().__init__()
        width, patch = cfg.vision_width, cfg.patch_size
        self.patch_size = patch
        self.conv1 = nn.Linear(3 * patch * patch, width, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width).normal_(std=INIT_STD))
        self.positional_embedding = nn.Parameter(
            torch.empty(1 + cfg.patches_per_frame, width).normal_(std=INIT_STD))
        self.temporal_embedding = nn.Parameter(
            torch.empty(cfg.num_frames, width).normal_(std=INIT_STD))
        self.ln_pre = nn.LayerNorm(width, eps=VISION_LN_EPS)
        self.transformer = Transformer(
            [VisionBlock(cfg, with_adapters) for _ in range(cfg.vision_layers)])
        self.ln_post = nn.LayerNorm(width, eps=VISION_LN_EPS)
        self.image_projection = nn.Parameter(
            torch.empty(width, cfg.embed_dim).normal_(std=width ** -0.5))

    def patchify(self, video):
        """[B, T, H, W, 3] -> [B, T*P, 3*p*p], tokens in (t, h, w) order, patch in (c, row, col)."""
        batch, frames, height, width, channels = video.shape
        p = self.patch_size
        grid_h, grid_w = height // p, width // p
        patches = video.reshape(batch, frames, grid_h, p, grid_w, p, channels)
        patches = patches.permute(0, 1, 2, 4, 6, 3, 5)  # B, T, gh, gw, C, row, col
        return patches.reshape(batch, frames * grid_h * grid_w, channels * p * p)

    def forward(self, video, use_adapters: bool = False):
        """Pooled, projected (not normalised) video embedding [B, embed_dim]."""
        batch, frames = video.shape[:2]
        tokens = self.conv1(self.patchify(video))
        temporal = resize_temporal_table(self.temporal_embedding, frames)
        spatial_pos = self.positional_embedding[1:]
        # [T, 1, D] + [1, P, D] -> position of token (t, p), flattened in (t, p) order.
        patch_pos = (temporal[:, None, :] + spatial_pos[None, :, :]).reshape(-1, tokens.shape[-1])
        tokens = tokens + patch_pos
        cls_token = (self.class_embedding + self.positional_embedding[0]).expand(batch, 1, -1)
        x = self.ln_pre(torch.cat([cls_token, tokens], dim=1))
        for block in self.transformer.resblocks:
            x = block(x)
            if use_adapters:
                x = block.adapter(x, frames)
        return self.ln_post(x[:, 0]) @ self.image_projection


class RefTextTransformer(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        width = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=INIT_STD)
        self.positional_embedding = nn.Parameter(
            torch.empty(cfg.context_length, width).normal_(std=INIT_STD / 2))
        self.transformer = Transformer([
            ResidualBlock(TextAttention(width, cfg.text_heads), TextMlp(width, 4 * width),
                          width, TEXT_LN_EPS)
            for _ in range(cfg.text_layers)])
        self.ln_final = nn.LayerNorm(width, eps=TEXT_LN_EPS)
        self.text_projection = nn.Parameter(
            torch.empty(width, cfg.embed_dim).normal_(std=width ** -0.5))

    def forward(self, token_ids):
        """token_ids [B, context_length] -> projected (not normalised) embedding [B, embed_dim]."""
        x = self.token_embedding(token_ids) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x)
        x = self.ln_final(x)
        # End-of-text has the highest id, so argmax finds it.
        eot = x[torch.arange(x.shape[0], device=x.device), token_ids.argmax(dim=-1)]
        return eot @ self.text_projection


class RefEgoVideo(nn.Module):
    """The whole model; ``mode`` is 'single' (plain video CLIP) or 'slowfast' (two branches)."""

    def __init__(self, cfg: RefConfig, mode: str = "single"):
        super().__init__()
        if mode not in ("single", "slowfast"):
            raise ValueError(f"mode must be 'single' or 'slowfast', got {mode!r}")
        self.cfg = cfg
        self.mode = mode
        self.visual = RefVisionTransformer(cfg, with_adapters=mode == "slowfast")
        self.textual = RefTextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if mode == "slowfast":
            self.slowfast_projection = nn.Parameter(torch.empty(2 * cfg.embed_dim, cfg.embed_dim))
            nn.init.trunc_normal_(self.slowfast_projection, std=(2 * cfg.embed_dim) ** -0.5)

    def encode_video(self, video, fast_video=None):
        """Single: ``encode_video(video)``. Slow/fast: ``encode_video(slow, fast)``.

        Videos are [B, T, H, W, 3], normalised; returns L2-normalised [B, embed_dim].
        """
        if self.mode == "single":
            if fast_video is not None:
                raise ValueError("single mode takes one video")
            embedding = self.visual(video)
        else:
            if fast_video is None:
                raise ValueError("slowfast mode takes (slow, fast) videos")
            e_slow = self.visual(video, use_adapters=False)
            e_fast = self.visual(fast_video, use_adapters=True)
            embedding = torch.cat([e_slow, e_fast], dim=-1) @ self.slowfast_projection
        return F.normalize(embedding, dim=-1)

    def encode_text(self, token_ids):
        """token_ids [B, context_length] -> L2-normalised [B, embed_dim]."""
        return F.normalize(self.textual(token_ids), dim=-1)
