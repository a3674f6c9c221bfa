"""Video embedding speed: our public API against the independent PyTorch reference, same weights.

    python benchmarks/embed.py                          # B/16: slow/fast, single 4 / 16 frames, batch 1, 2
    python benchmarks/embed.py --quick --out /tmp/embed.json   # the tiny variant, seconds

For each case (model, batch): `egovideo_jax.load(variant=..., mode=...).encode_video` (what a
user calls: jit-compiled, float32, the default `auto` attention) and the reference model of
tests/helpers/torch_reference.py loaded strict from our exported state dict, under
`torch.no_grad()` with every CPU thread; median of `--repeats` timed calls after `--warmup`
untimed ones (the first compiles), on the same random CLIP-normalised frames. Reports
seconds per call, clips/s, the ratio reference / ours (> 1: ours is faster) and the largest
difference between the two embeddings (they are the same function: <= 1e-5). The reference
computes attention as written in the spec (explicit `[L, L]` scores, softmax); `torch_sdpa`
times it again with PyTorch's fused CPU kernel (`scaled_dot_product_attention`) in its place,
the fastest PyTorch has: the ratio that matters is against that one. Prints a table, writes
JSON (default benchmarks/results/embed.json).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np
from machine_info import machine, write_results
from step_timing import median_seconds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / 'benchmarks' / 'results' / 'embed.json'
# (name, mode, frames of a single-branch model): slow/fast models take their own 4 + 16.
CASES = (('slowfast', 'slowfast', None), ('single_4f', 'single', 4), ('single_16f', 'single', 16))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variant', default='B/16', help='model variant (model/config.py)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--cases', nargs='+', default=[name for name, _, _ in CASES],
                        choices=[name for name, _, _ in CASES])
    parser.add_argument('--repeats', type=int, default=3, help='timed calls per case')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls first (compile)')
    parser.add_argument('--quick', action='store_true',
                        help="the 'tiny' variant, batch 1 and 2, 2 repeats: a smoke run")
    parser.add_argument('--skip-torch', action='store_true', help='time ours only')
    parser.add_argument('--out', default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    if args.quick:
        args.variant, args.repeats = 'tiny', 2
    if args.repeats < 1 or args.warmup < 1 or min(args.batches) < 1:
        parser.error('--repeats, --warmup and --batches must be >= 1')
    return args


def frames(batch: int, num_frames: int, size: int, seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    return gen.standard_normal((batch, num_frames, size, size, 3)).astype(np.float32)


def reference_model(model, variant: str):
    """The independent PyTorch reference with `model`'s weights (strict load)."""
    import torch

    sys.path.insert(0, str(ROOT))  # the reference lives in the test helpers
    from tests.helpers.torch_reference import RefConfig, RefEgoVideo

    configs = {'B/16': RefConfig.b16, 'tiny': RefConfig.tiny}
    if variant not in configs:
        raise SystemExit(f'--variant {variant}: the PyTorch reference has {sorted(configs)}; '
                         'use --skip-torch for other variants')
    reference = RefEgoVideo(configs[variant](), model.config.mode)
    reference.load_state_dict({key: torch.from_numpy(np.array(value))
                               for key, value in model.reference_state().items()}, strict=True)
    return reference.eval()


def sdpa_attention(x, qkv_weight, qkv_bias, out_proj, heads: int, causal: bool):
    """The reference's `multi_head_attention` with PyTorch's fused attention kernel."""
    import torch.nn.functional as F

    batch, length, width = x.shape
    qkv = F.linear(x, qkv_weight, qkv_bias).reshape(batch, length, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out_proj(context.transpose(1, 2).reshape(batch, length, width))


def time_reference(reference, tensors, args) -> tuple[np.ndarray, float, list[float]]:
    import torch

    def encode():
        with torch.no_grad():
            return reference.encode_video(*tensors).numpy()

    embedding = encode()
    return (embedding, *median_seconds(encode, args.repeats, args.warmup))


def bench_case(name: str, mode: str, single_frames: int | None, batch: int, args) -> dict:
    import egovideo_jax

    model = egovideo_jax.load(variant=args.variant, mode=mode, seed=0, verbose=False)
    config = model.config
    size = config.vision.image_size
    if mode == 'slowfast':
        inputs = (frames(batch, config.vision.num_frames, size, 1),
                  frames(batch, config.fast_frames, size, 2))
    else:
        inputs = (frames(batch, single_frames, size, 1),)
    ours = model.encode_video(*inputs)
    seconds, times = median_seconds(lambda: model.encode_video(*inputs),
                                    args.repeats, args.warmup)
    row = {'case': name, 'mode': mode, 'batch': batch,
           'frames': [x.shape[1] for x in inputs], 'ours_s': seconds, 'ours_times_s': times,
           'ours_clips_per_s': batch / seconds}
    if not args.skip_torch:
        import torch

        torch.set_num_threads(os.cpu_count())
        reference = reference_model(model, args.variant)  # puts the repository on sys.path
        from tests.helpers import torch_reference

        tensors = [torch.from_numpy(x) for x in inputs]
        theirs, torch_seconds, torch_times = time_reference(reference, tensors, args)
        written = torch_reference.multi_head_attention
        torch_reference.multi_head_attention = sdpa_attention  # looked up at call time
        try:
            fused, sdpa_seconds, sdpa_times = time_reference(reference, tensors, args)
        finally:
            torch_reference.multi_head_attention = written
        row.update(torch_s=torch_seconds, torch_times_s=torch_times,
                   torch_clips_per_s=batch / torch_seconds,
                   speedup_vs_torch=torch_seconds / seconds,
                   torch_sdpa_s=sdpa_seconds, torch_sdpa_times_s=sdpa_times,
                   speedup_vs_torch_sdpa=sdpa_seconds / seconds,
                   max_abs_diff=float(max(np.max(np.abs(ours - theirs)),
                                          np.max(np.abs(ours - fused)))))
    return row


def print_table(rows: list[dict], args) -> None:
    header = f'{"case":<11} {"batch":>5} {"ours s":>8} {"clips/s":>8}'
    if not args.skip_torch:
        header += f' {"torch s":>8} {"ratio":>6} {"sdpa s":>8} {"ratio":>6} {"max diff":>9}'
    print(f'\n{args.variant} video embedding, float32 ({os.cpu_count()} CPUs; ratio = PyTorch s / '
          'ours s, > 1: ours is faster; sdpa: the reference with PyTorch\'s fused attention)')
    print(header)
    for row in rows:
        line = f'{row["case"]:<11} {row["batch"]:>5} {row["ours_s"]:>8.3f} ' \
               f'{row["ours_clips_per_s"]:>8.2f}'
        if 'torch_s' in row:
            line += (f' {row["torch_s"]:>8.3f} {row["speedup_vs_torch"]:>6.2f}'
                     f' {row["torch_sdpa_s"]:>8.3f} {row["speedup_vs_torch_sdpa"]:>6.2f}'
                     f' {row["max_abs_diff"]:>9.1e}')
        print(line)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    cases = {name: (mode, single) for name, mode, single in CASES}
    rows = []
    for name in args.cases:
        for batch in args.batches:
            rows.append(bench_case(name, *cases[name], batch, args))
            print(f'[{name} batch {batch}] ours {rows[-1]["ours_s"]:.3f} s'
                  + (f', torch {rows[-1]["torch_s"]:.3f} s' if 'torch_s' in rows[-1] else ''),
                  flush=True)
    print_table(rows, args)
    report = {'benchmark': 'embed', 'date': datetime.datetime.now().isoformat(timespec='seconds'),
              'variant': args.variant, 'repeats': args.repeats, 'warmup': args.warmup,
              'backend': jax.default_backend(),
              'machine': machine(('jax', 'jaxlib', 'flax', 'torch')), 'results': rows}
    if hasattr(os, 'getloadavg'):  # other work on the host skews timings: say how much
        report['load_average_at_end'] = list(os.getloadavg())
    write_results(args.out, report)
    return report


if __name__ == '__main__':
    main()
