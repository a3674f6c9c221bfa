#!/usr/bin/env python3
"""Co-training step benchmark: our jitted JAX step against the same step in PyTorch.

    python benchmarks/train_step.py                                # tiny and B/16, batch 2
    python benchmarks/train_step.py --variants B/16 --steps 3 --warmup 1
    python benchmarks/train_step.py --quick --out /tmp/train_step.json   # tiny, 2 steps (test)

For every model variant, in joint slow/fast co-training (4 slow + 16 fast frames):

- JAX: the step is built exactly as `egovideo_jax.train.trainer.train` builds it, from
  `configs/cotrain.py` `get_config('b16')` (stage `joint`) with the model variant, the batch
  size and the dtype replaced (float32 on CPU by default): `train/setup.py make_setup` (the
  trainer's module, optimizer, shardings and step) on a mesh over all local devices,
  and random inputs placed on the mesh with `global_batch`. Compilation (`lower().compile()`)
  is timed on its own; then `--warmup` steps, then the median of `--steps` timed steps, each
  waited for with `block_until_ready`. `--remat-policy auto` (default) keeps the config's
  policy (b16: `full`) when XLA's memory analysis of the compiled step fits the free memory,
  else recompiles with `dots_no_batch`, then `full` (B/16 at batch 2 in float32 needs 1.9 GB
  beyond its state with `full`, 10.6 GB with `none`, on CPU). Model FLOPs (`flops_per_step`, `flops_*`) are the analytic count of
  `egovideo_jax.train.flops.model_flops_from_config` (matmuls of the whole global batch,
  forward + backward, no remat recompute), which gives MFU where
  `egovideo_jax.train.metrics.peak_flops` knows the device (not for CPUs);
  `compiled_flops_*` is `compiled.cost_analysis()` of the timed executable, for reference
  (with `scan_layers` XLA counts the layer loop once, ~11x too low for B/16).
- PyTorch: the same step on the independent reference model `tests/helpers/torch_reference.py`
  (`RefEgoVideo(cfg, 'slowfast')`), float32, same batch and inputs: forward of the slow/fast
  video embedding and `encode_text`, symmetric InfoNCE with the logit scale, backward,
  `torch.optim.AdamW(lr=4e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)`. It mirrors
  what our step computes: the fast branch runs through the shared backbone with its weights
  detached (only the adapters get gradients from it, as in `EgoVideo._fast_branch`), the logit
  scale is frozen (`config.optim.frozen`) and biases/norms/embeddings get no weight decay
  (`config.optim.no_decay`). `--torch-fast-grads all` runs the reference's plain
  `encode_video(slow, fast)` instead (backbone weight gradients from both branches).
  CUDA when available, else CPU with `torch.set_num_threads(os.cpu_count())`
  (`--torch-threads`).

The JAX side is benchmarks/train_step_jax.py, the PyTorch side benchmarks/train_step_torch.py,
and both are timed by benchmarks/step_timing.py.

Prints a table and writes JSON (`--out`). Runs unchanged on CPU, GPU and TPU hosts; when the
batch does not divide over the local devices it is rounded up to the next multiple (recorded).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

from machine_info import write_results
from train_step_jax import (
    FAST_FRAMES,
    SLOW_FRAMES,
    bench_jax,
    jax_dtype_default,
    load_cotrain_config,
)
from train_step_torch import (
    REF_CONFIGS,
    TORCH_BETAS,
    TORCH_EPS,
    TORCH_LR,
    TORCH_WEIGHT_DECAY,
    bench_torch,
    torch_device,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / 'benchmarks' / 'results' / 'train_step.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', default='tiny,B/16',
                        help=f'comma-separated model variants, from {sorted(REF_CONFIGS)}')
    parser.add_argument('--batch', type=int, default=2, help='global batch (clips per step)')
    parser.add_argument('--steps', type=int, default=10, help='timed steps (median reported)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                        help='JAX compute dtype (default: float32 on CPU, else the config\'s)')
    parser.add_argument('--remat-policy', default='auto',
                        choices=('auto', 'none', 'dots', 'dots_no_batch', 'full',
                                 'nothing_saveable'),
                        help='JAX rematerialisation (config.model.remat_policy). auto (default): '
                             "the config's ('none') when XLA's memory analysis says the step "
                             'fits in free memory, else the first that fits of '
                             'dots_no_batch, full')
    parser.add_argument('--scan-layers', choices=('config', 'on', 'off'), default='config',
                        help="nn.scan over the layers (config.model.scan_layers): the config's "
                             '(on for b16), or forced. XLA:CPU runs the scanned stack ~4x slower '
                             'than the unrolled one')
    parser.add_argument('--attention', default='auto',
                        choices=('auto', 'xla', 'cudnn', 'chunked'),
                        help='config.model.attention (egovideo_jax/model/transformer.py): auto '
                             '(default) chunks long sequences on CPUs, XLA elsewhere; cudnn '
                             'for NVIDIA GPUs with --dtype bfloat16')
    parser.add_argument('--skip-torch', action='store_true', help='JAX only')
    parser.add_argument('--torch-fast-grads', choices=('adapters', 'all'), default='adapters',
                        help='PyTorch fast branch: adapters only get gradients (as our step, '
                             'default) or the plain reference encode_video (all weights)')
    parser.add_argument('--torch-threads', type=int, default=None,
                        help='torch.set_num_threads (default: os.cpu_count())')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true',
                        help='smoke run for tests: tiny only, 2 timed steps, 1 warm-up')
    parser.add_argument('--out', default=str(DEFAULT_OUT), help='JSON results file')
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.steps, args.warmup = 'tiny', 2, 1
    args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    unknown = [v for v in args.variants if v not in REF_CONFIGS]
    if unknown:
        parser.error(f'unknown variant(s) {unknown}; choose from {sorted(REF_CONFIGS)}')
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error('--batch and --steps must be >= 1, --warmup >= 0')
    return args


def make_inputs(variant: str, batch: int, seed: int) -> dict:
    """Random CLIP-normalised-like frames and token ids ending in end-of-text (the highest id,
    which both text towers find with argmax), as host numpy arrays."""
    import numpy as np

    from egovideo_jax.model.config import get_model_config
    cfg = get_model_config(variant, 'slowfast', SLOW_FRAMES, fast_frames=FAST_FRAMES)
    size, context, vocab = cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size
    rng = np.random.default_rng(seed)
    slow = rng.standard_normal((batch, SLOW_FRAMES, size, size, 3), dtype=np.float32)
    fast = rng.standard_normal((batch, FAST_FRAMES, size, size, 3), dtype=np.float32)
    tokens = np.zeros((batch, context), np.int32)
    for row in range(batch):
        length = int(rng.integers(4, context))
        tokens[row, 0] = vocab - 2  # start of text
        tokens[row, 1:length - 1] = rng.integers(1, vocab - 2, length - 2)
        tokens[row, length - 1] = vocab - 1  # end of text
    return {'slow': slow, 'fast': fast, 'tokens': tokens}


def environment(args) -> dict:
    import flax
    import jax
    import jaxlib
    import optax
    device = jax.devices()[0]
    env = {
        'python': platform.python_version(), 'platform': platform.platform(),
        'cpu_count': os.cpu_count(), 'jax_version': jax.__version__,
        'jaxlib_version': jaxlib.__version__, 'flax_version': flax.__version__,
        'optax_version': optax.__version__, 'jax_backend': jax.default_backend(),
        'device_kind': device.device_kind, 'local_device_count': jax.local_device_count(),
        'device_count': jax.device_count(), 'process_count': jax.process_count(),
        'load_average_at_start': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
    }
    if not args.skip_torch:
        import torch
        env.update(torch_version=torch.__version__, torch_device=str(torch_device()),
                   torch_cuda=torch.version.cuda)
    return env


def fmt(value, spec='.3f', missing='-'):
    return missing if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    header = ('variant', 'batch', 'scan', 'remat', 'JAX compile s', 'JAX step s', 'JAX clips/s',
              'torch step s', 'torch clips/s', 'JAX/torch', 'JAX CPU s', 'torch CPU s',
              'GFLOP/step', 'MFU')
    rows = [header]
    for r in results:
        j, t = r['jax'], r.get('torch') or {}
        flops = j.get('flops_per_step')
        rows.append((r['variant'], str(r['batch']), 'on' if j['scan_layers'] else 'off',
                     j['remat_policy'],
                     fmt(j['compile_s'], '.1f'), fmt(j['step_time_s']),
                     fmt(j['clips_per_s'], '.3g'),
                     fmt(t.get('step_time_s')), fmt(t.get('clips_per_s'), '.3g'),
                     fmt(r.get('jax_over_torch_step_time'), '.2f'),
                     fmt(j['cpu_time_per_step_s']), fmt(t.get('cpu_time_per_step_s')),
                     fmt(flops / 1e9 if flops else None, '.1f'),
                     fmt(j.get('mfu'), '.1%')))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ['| ' + ' | '.join(cell.ljust(w) for cell, w in zip(row, widths)) + ' |'
             for row in rows]
    lines.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.dtype is None:
        args.dtype = jax_dtype_default()
    from egovideo_jax.parallel import sharding
    data_parallel = sharding.data_parallel_size(sharding.make_mesh(load_cotrain_config().mesh))
    batch = -(-args.batch // data_parallel) * data_parallel
    if batch != args.batch:
        print(f'batch {args.batch} does not divide over {data_parallel} data-parallel devices; '
              f'using {batch}', flush=True)

    report = {
        'benchmark': 'train_step',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join([Path(sys.argv[0]).name if argv is None else 'train_step.py',
                             *(sys.argv[1:] if argv is None else argv)]),
        'environment': environment(args),
        'settings': {
            'config': 'configs/cotrain.py:b16 (stage joint)', 'mode': 'slowfast',
            'slow_frames': SLOW_FRAMES, 'fast_frames': FAST_FRAMES, 'batch': batch,
            'requested_batch': args.batch, 'steps': args.steps, 'warmup': args.warmup,
            'jax_dtype': args.dtype, 'jax_scan_layers': args.scan_layers,
            'jax_remat_policy': args.remat_policy, 'jax_attention': args.attention,
            'torch_dtype': 'float32', 'skip_torch': args.skip_torch,
            'torch_fast_grads': args.torch_fast_grads,
            'torch_threads': args.torch_threads or os.cpu_count(), 'torch_optimizer': {
                'name': 'AdamW', 'lr': TORCH_LR, 'betas': list(TORCH_BETAS), 'eps': TORCH_EPS,
                'weight_decay': TORCH_WEIGHT_DECAY},
            'seed': args.seed},
        'results': [],
    }
    for variant in args.variants:
        inputs = make_inputs(variant, batch, args.seed)
        print(f'[{variant}] JAX: building, compiling, {args.warmup} warm-up + {args.steps} '
              f'timed steps ...', flush=True)
        result = {'variant': variant, 'batch': batch,
                  'jax': bench_jax(variant, batch, inputs, args)}
        print(f'[{variant}] JAX: compile {result["jax"]["compile_s"]:.1f} s, step '
              f'{result["jax"]["step_time_s"]:.3f} s', flush=True)
        if not args.skip_torch:
            print(f'[{variant}] PyTorch: {args.warmup} warm-up + {args.steps} timed steps ...',
                  flush=True)
            result['torch'] = bench_torch(variant, batch, inputs, args)
            print(f'[{variant}] PyTorch: step {result["torch"]["step_time_s"]:.3f} s',
                  flush=True)
            result['jax_over_torch_step_time'] = (result['jax']['step_time_s']
                                                  / result['torch']['step_time_s'])
            result['jax_over_torch_cpu_time'] = (result['jax']['cpu_time_per_step_s']
                                                 / result['torch']['cpu_time_per_step_s'])
        report['results'].append(result)

    print()
    print(table(report['results']))
    env = report['environment']
    print(f"\nJAX {env['jax_version']} on {env['local_device_count']} x {env['device_kind']} "
          f"({args.dtype})" + ('' if args.skip_torch else
                                f"; torch {env['torch_version']} on {env['torch_device']} "
                                f"(float32)") + f"; {env['cpu_count']} CPUs. "
          'JAX/torch: step-time ratio (< 1: our step is faster); CPU s: process CPU '
          'seconds per step (all threads).')
    if hasattr(os, 'getloadavg'):  # other work on the host skews CPU timings: say how much
        env['load_average_at_end'] = list(os.getloadavg())
    write_results(args.out, report)
    return report


if __name__ == '__main__':
    main()
