"""CLIP text transformer (causal, pooled at the end-of-text token)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from egovideo_jax.model.config import TextConfig
from egovideo_jax.model.transformer import Dtype, ResidualBlock, apply_blocks, layer_norm, logical


class TextTransformer(nn.Module):
    config: TextConfig
    embed_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat_policy: str | None = None
    attention: str = 'auto'  # transformer.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, tokens):
        """tokens int [B, L<=context_length] -> pooled projection [B, embed_dim].

        Pools at argmax(token id): the end-of-text token has the highest id in CLIP's vocab.
        """
        cfg = self.config
        batch, length = tokens.shape
        if length > cfg.context_length:
            raise ValueError(f'{length} tokens exceed the context length {cfg.context_length}')
        x = nn.Embed(cfg.vocab_size, cfg.width, dtype=self.dtype, param_dtype=self.param_dtype,
                     embedding_init=logical(nn.initializers.normal(0.02), ('vocab', 'embed')),
                     name='token_embedding')(tokens)
        positional = self.param(
            'positional_embedding', logical(nn.initializers.normal(0.01), (None, 'embed')),
            (cfg.context_length, cfg.width), self.param_dtype)
        x = x + positional[:length].astype(self.dtype)
        x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
        x = apply_blocks(ResidualBlock, x, num_layers=cfg.layers, scan=self.scan_layers,
                         remat_policy=self.remat_policy, num_heads=cfg.heads,
                         mlp_dim=4 * cfg.width, ln_eps=cfg.ln_eps, causal=True,
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         attention=self.attention)
        x = layer_norm(cfg.ln_eps, self.dtype, self.param_dtype, 'ln_final')(x)
        pooled = x[jnp.arange(batch), jnp.argmax(tokens, axis=-1)]
        projection = self.param(
            'text_projection', logical(nn.initializers.normal(cfg.width ** -0.5),
                                       ('embed', 'proj')),
            (cfg.width, self.embed_dim), self.param_dtype)
        return pooled @ projection.astype(self.dtype)
