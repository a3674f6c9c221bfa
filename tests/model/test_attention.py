"""Attention implementations compute the same function (chunked vs full softmax, the `auto`
choice on CPU).
"""
import functools

import jax
import jax.numpy as jnp
import pytest

from egovideo_jax.model import EgoVideo
from egovideo_jax.model.transformer import chunked_attention, query_chunks, resolve_attention
from tests.helpers.tiny_model import CFG, FAST, SLOW, TOKENS, _max_diff

# ---------------------------------------------------------------------------------------------
# Attention implementations give the same function
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('causal', [False, True])
def test_chunked_attention_matches_full_attention(causal):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 37, 3, 8)) for i in range(3))

    def loss(attend, q, k, v):
        return jnp.sum(attend(q, k, v) * jnp.cos(jnp.arange(8.0)))

    def full(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal)

    def chunked(q, k, v):  # 37 queries in chunks of 8: the last chunk is padded
        return chunked_attention(q, k, v, causal, chunk=8)

    assert _max_diff(full(q, k, v), chunked(q, k, v)) <= 1e-6
    grads_full = jax.grad(functools.partial(loss, full), argnums=(0, 1, 2))(q, k, v)
    grads_chunked = jax.grad(functools.partial(loss, chunked), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grads_full, grads_chunked):
        assert _max_diff(a, b) <= 1e-5


def test_query_chunks_pad_little():
    assert query_chunks(3137, 512) == (7, 456)  # the B/16 fast branch: 55 padded rows, not 447
    assert query_chunks(37, 8) == (5, 8)
    assert query_chunks(512, 512) == (1, 512)
    assert query_chunks(9217, 512) == (19, 488)
    for length in range(1, 300, 7):
        count, size = query_chunks(length, 64)
        assert size % 8 == 0 and size <= 64 and count * size >= length > (count - 1) * size


def test_chunked_model_matches_xla_model(params):
    p = params['slowfast']
    xla = EgoVideo(CFG['slowfast'], attention='xla')
    chunked = EgoVideo(CFG['slowfast'], attention='chunked')
    out_xla = xla.apply({'params': p}, SLOW, TOKENS, FAST)
    out_chunked = chunked.apply({'params': p}, SLOW, TOKENS, FAST)
    for key in ('video', 'text'):
        assert _max_diff(out_xla[key], out_chunked[key]) <= 1e-5, key


def test_auto_attention_chunks_long_sequences_on_cpu():
    assert resolve_attention('auto', 64) == 'xla'
    assert resolve_attention('auto', 3137) == ('chunked' if jax.default_backend() == 'cpu'
                                               else 'xla')
    assert resolve_attention('cudnn', 3137) == 'cudnn'
    with pytest.raises(ValueError, match='flash'):
        resolve_attention('flash', 64)
