#!/usr/bin/env python3
"""Where the co-training step's time goes: a per-op profile of the jitted step.

    python benchmarks/profile_step.py                       # B/16, batch 2, all 12 layers
    python benchmarks/profile_step.py --layers 2            # same blocks, 2 per tower: minutes
    python benchmarks/profile_step.py --variant tiny --quick --out /tmp/profile.json   # test

The step is the one benchmarks/train_step.py times (configs/cotrain.py:b16 with the variant,
batch and dtype replaced, built by `train/setup.py make_setup`). `--layers N` keeps every
width but gives each tower N blocks: each block costs the same, so the per-op shares carry
over to the full depth. After compiling and `--warmup` untimed steps, one step runs under
`jax.profiler` and the trace's ops (XLA thunks: fusions, matmuls, convolutions, loops) are
summed by name and by kind (the name without its number). On CPU the leaf ops add up to
about the step's wall time; the wrappers (`ThunkExecutor`, the Python dispatch) are left
out. Prints the step time, XLA's memory analysis and the top kinds and ops; writes JSON.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

from machine_info import write_results
from train_step import make_inputs
from train_step_jax import SCHEDULE_STEPS, step_memory, variant_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / 'benchmarks' / 'results' / 'profile_step.json'
WRAPPERS = ('ThunkExecutor', 'PjitFunction', 'Execute', 'SlinkyThreadPool', '$', 'Allocate',
            'Handle', 'Parse', 'Python', 'CommonPjRt')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variant', default='B/16', choices=('tiny', 'B/16', 'L/14-336'))
    parser.add_argument('--layers', type=int, default=0,
                        help='blocks per tower (0: the variant\'s own)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
    parser.add_argument('--remat-policy', default='full',
                        help='none | full | dots | dots_no_batch | nothing_saveable')
    parser.add_argument('--attention', default='auto')
    parser.add_argument('--scan-layers', choices=('config', 'on', 'off'), default='config')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--top', type=int, default=15, help='rows of each table')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='tiny, for the test')
    parser.add_argument('--out', default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    if args.quick:
        args.variant, args.layers, args.top = 'tiny', 0, 5
    if args.layers < 0 or args.batch < 1 or args.warmup < 0:
        parser.error('--layers must be >= 0, --batch >= 1, --warmup >= 0')
    return args


def model_variant(variant: str, layers: int) -> str:
    """The variant's name, or a registered copy with `layers` blocks per tower."""
    from egovideo_jax.model import config as model_config
    if not layers:
        return variant
    base = model_config.VARIANTS[variant]
    name = f'{variant}-{layers}L'
    model_config.VARIANTS[name] = dataclasses.replace(
        base, vision=dataclasses.replace(base.vision, layers=layers),
        text=dataclasses.replace(base.text, layers=layers))
    return name


def op_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """(seconds per op name, calls per op name, seconds per op kind) of the trace's leaf ops."""
    path = sorted(glob.glob(f'{trace_dir}/**/perfetto_trace.json.gz', recursive=True))[-1]
    with gzip.open(path) as file:
        events = json.load(file)
    events = events['traceEvents'] if isinstance(events, dict) else events
    seconds, calls, kinds = collections.Counter(), collections.Counter(), collections.Counter()
    for event in events:
        name = event.get('name', '')
        if event.get('ph') != 'X' or name.startswith(WRAPPERS):
            continue
        duration = event.get('dur', 0) / 1e6
        seconds[name] += duration
        calls[name] += 1
        kinds[re.sub(r'[._]\d+$', '', name)] += duration
    return seconds, calls, kinds


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    from egovideo_jax.parallel import sharding
    from egovideo_jax.parallel.batching import global_batch
    from egovideo_jax.train.setup import make_setup
    from egovideo_jax.train.trainer import MODEL_INPUTS

    variant = model_variant(args.variant, args.layers)
    config = variant_config(variant, args.batch, args, remat_policy=args.remat_policy)
    mesh = sharding.make_mesh(config.mesh)
    setup = make_setup(config, mesh, SCHEDULE_STEPS)
    state = setup.create_state(config.seed)
    inputs = make_inputs(args.variant, args.batch, args.seed)
    batch = global_batch({key: inputs[key] for key in MODEL_INPUTS}, mesh)
    start = time.perf_counter()
    compiled = setup.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        state, _ = compiled(state, batch)
        jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        state, _ = compiled(state, batch)
        jax.block_until_ready(state)
        step_s = time.perf_counter() - start
        jax.profiler.stop_trace()
        seconds, calls, kinds = op_times(trace_dir)
    total = sum(seconds.values())
    print(f'{variant}, batch {args.batch}, {args.dtype}, remat {args.remat_policy}, '
          f'attention {args.attention}: compile {compile_s:.1f} s, profiled step {step_s:.2f} s, '
          f'leaf ops {total:.2f} s')
    for name, value in kinds.most_common(args.top):
        print(f'  {value:8.3f} s {100 * value / total:5.1f}%  {name}')
    print('  top ops:')
    for name, value in seconds.most_common(args.top):
        print(f'  {value:8.3f} s {calls[name]:6d} calls  {name}')
    report = {
        'variant': variant, 'batch': args.batch, 'dtype': args.dtype,
        'remat_policy': args.remat_policy, 'attention': args.attention,
        'scan_layers': bool(config.model.scan_layers), 'device': jax.devices()[0].device_kind,
        'compile_s': compile_s, 'step_s': step_s, 'leaf_ops_s': total,
        'memory_analysis': step_memory(compiled),
        'kinds_s': dict(kinds.most_common(args.top)),
        'ops': [{'name': name, 'seconds': value, 'calls': calls[name]}
                for name, value in seconds.most_common(args.top)]}
    write_results(args.out, report)
    return report


if __name__ == '__main__':
    main()
