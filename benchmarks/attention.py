"""Attention implementations at the fast branch's sequence length: forward and gradient time.

    python benchmarks/attention.py                     # B/16 fast branch: 3137 tokens, 12 x 64
    python benchmarks/attention.py --quick --out /tmp/attention.json   # small, seconds

Times `egovideo_jax.model.transformer`'s implementations on random `[batch, length, heads,
head_dim]` inputs: 'xla' (jax.nn.dot_product_attention, the full softmax matrix), 'chunked'
(exact, ATTENTION_CHUNK queries at a time) and, on NVIDIA GPUs, 'cudnn' (bf16). For each:
the jitted forward and the gradient w.r.t. q, k, v (median of `--repeats` after a compile
call), and the largest difference from 'xla'. `--torch` adds PyTorch's
`scaled_dot_product_attention` forward and backward on the same inputs for comparison.
Prints a table, writes JSON (default benchmarks/results/attention.json).
"""
from __future__ import annotations

import argparse
import datetime
import os

import jax
import jax.numpy as jnp
import numpy as np
from machine_info import machine, write_results
from step_timing import median_seconds

from egovideo_jax.model.transformer import chunked_attention

FULL = dict(batch=2, length=3137, heads=12, head_dim=64, repeats=3)
QUICK = dict(batch=1, length=300, heads=2, head_dim=16, repeats=2)


def implementations(dtype) -> dict:
    found = {'xla': lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation='xla'),
             'chunked': chunked_attention}
    if jax.default_backend() == 'gpu' and dtype == jnp.bfloat16:
        found['cudnn'] = lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, implementation='cudnn')
    return found


def bench_jax(sizes: dict, dtype) -> list[dict]:
    shape = (sizes['batch'], sizes['length'], sizes['heads'], sizes['head_dim'])
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), shape, dtype) for i in range(3))
    reference = None
    rows = []
    for name, attend in implementations(dtype).items():
        forward = jax.jit(attend)
        gradient = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32)
                                                            ** 2), argnums=(0, 1, 2)))
        out = np.asarray(forward(q, k, v), np.float32)
        reference = out if reference is None else reference
        rows.append({'name': name,
                     'forward_s': median_seconds(
                         lambda: jax.block_until_ready(forward(q, k, v)), sizes['repeats'])[0],
                     'gradient_s': median_seconds(
                         lambda: jax.block_until_ready(gradient(q, k, v)), sizes['repeats'])[0],
                     'max_abs_diff_vs_xla': float(np.max(np.abs(out - reference)))})
        print(f"{name:8s} forward {rows[-1]['forward_s']:.3f} s  gradient "
              f"{rows[-1]['gradient_s']:.3f} s", flush=True)
    return rows


def bench_torch(sizes: dict) -> dict:
    import torch
    import torch.nn.functional as F
    shape = (sizes['batch'], sizes['heads'], sizes['length'], sizes['head_dim'])
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))

    def forward():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v)

    def gradient():
        F.scaled_dot_product_attention(q, k, v).pow(2).sum().backward()

    row = {'name': 'torch sdpa', 'forward_s': median_seconds(forward, sizes['repeats'])[0],
           'gradient_s': median_seconds(gradient, sizes['repeats'])[0],
           'torch_threads': torch.get_num_threads()}
    print(f"torch    forward {row['forward_s']:.3f} s  gradient {row['gradient_s']:.3f} s",
          flush=True)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes (the test)')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--torch', action='store_true', help='add PyTorch SDPA (CPU)')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results',
                                                      'attention.json'))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    dtype = jnp.dtype(args.dtype)
    print(f"attention [{sizes['batch']}, {sizes['length']}, {sizes['heads']}, "
          f"{sizes['head_dim']}] {args.dtype} on {jax.devices()[0].device_kind}", flush=True)
    rows = bench_jax(sizes, dtype)
    if args.torch:
        rows.append(bench_torch(sizes))
    report = {'date': datetime.date.today().isoformat(), 'quick': args.quick,
              'machine': {**machine(('jax', 'jaxlib', 'torch')),
                          'device': jax.devices()[0].device_kind},
              'sizes': sizes, 'dtype': args.dtype, 'results': rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_results(args.out, report)
    return report


if __name__ == '__main__':
    main()
