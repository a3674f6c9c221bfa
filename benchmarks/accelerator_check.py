"""The B/16 joint co-training step on this host's accelerator: step time, clips/s, model-FLOPs
MFU and peak device memory, for our recipe and the reference-equivalent one.

    bash benchmarks/accelerator_check.sh            # the wrapper: checks imports, < 10 min
    python benchmarks/accelerator_check.py --batch-per-device 32 --steps 10 --out FILE.json

Settings (both `configs/cotrain.py:b16` in bfloat16, the attention that suits the chip:
`cudnn` on NVIDIA GPUs, `auto` = Pallas splash on TPUs; random inputs, so no data is read):
- `joint`: ours. The slow branch trains the backbone; the fast (16-frame) branch runs through
  the frozen shared backbone and trains the motion adapters, so its backward pass runs too.
- `reference_equivalent`: what the released reference effectively trains: the adapters stay
  frozen at identity, so no gradient flows into the fast branch and XLA drops its backward.
Each: compile (timed apart), `--warmup` steps, then the median of `--steps` timed steps
(`block_until_ready`). MFU = analytic model FLOPs (train/flops.py) / step time / (peak bf16
FLOP/s per chip x chips); peak memory from the device's `memory_stats()`.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

from machine_info import write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SETTINGS = {
    'joint': (),
    'reference_equivalent': ('logit_scale', 'visual/blocks[^/]*/adapter/.*'),
}


def best_attention(platform: str) -> str:
    return {'gpu': 'cudnn', 'cuda': 'cudnn'}.get(platform, 'auto')


def run_setting(name: str, args) -> dict:
    import jax
    import numpy as np

    from configs.cotrain import get_config
    from egovideo_jax.parallel import sharding
    from egovideo_jax.parallel.batching import global_batch
    from egovideo_jax.train.flops import model_flops_from_config
    from egovideo_jax.train.metrics import peak_flops
    from egovideo_jax.train.setup import make_setup

    devices = jax.devices()
    config = get_config(f'{args.config},joint')
    with config.unlocked():
        config.data.batch_size = args.batch_per_device * len(devices)
        config.model.attention = args.attention or best_attention(devices[0].platform)
        config.model.remat_policy = args.remat_policy
        if SETTINGS[name]:
            config.optim.frozen = SETTINGS[name]
    mesh = sharding.make_mesh(config.mesh)
    setup = make_setup(config, mesh, total_steps=10_000)
    state = setup.create_state(config.seed)
    cfg = setup.model_config
    size, batch = cfg.vision.image_size, config.data.batch_size
    rng = np.random.default_rng(0)
    inputs = global_batch({
        'slow': rng.standard_normal((batch, cfg.vision.num_frames, size, size, 3), np.float32),
        'fast': rng.standard_normal((batch, cfg.fast_frames, size, size, 3), np.float32),
        'tokens': rng.integers(1, 49000, (batch, cfg.text.context_length)).astype(np.int32),
    }, mesh)
    started = time.perf_counter()
    compiled = setup.step.lower(state, inputs).compile()
    compile_s = time.perf_counter() - started
    for _ in range(args.warmup):
        state, metrics = compiled(state, inputs)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        state, metrics = compiled(state, inputs)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    flops = model_flops_from_config(config).total
    peak = peak_flops(devices[0])
    try:
        memory = devices[0].memory_stats() or {}
    except Exception:
        memory = {}
    return {
        'setting': name, 'attention': config.model.attention,
        'remat_policy': config.model.remat_policy, 'global_batch': batch,
        'compile_s': compile_s, 'step_s': step_s, 'step_times_s': times,
        'clips_per_s': batch / step_s, 'model_flops_per_step': flops,
        'mfu': flops / step_s / (peak * len(devices)) if peak else None,
        'peak_bytes_in_use': memory.get('peak_bytes_in_use'),
        'bytes_limit': memory.get('bytes_limit'),
        'loss': float(metrics['loss']),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='b16', help='configs/cotrain.py variant (demo: a '
                        'seconds-long smoke run, what the test does)')
    parser.add_argument('--batch-per-device', type=int, default=32)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--attention', default=None, help='default: the best for the chip')
    parser.add_argument('--remat-policy', default='full')
    parser.add_argument('--settings', nargs='*', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--out', default=str(REPO / 'benchmarks/results/accelerator_check.json'))
    args = parser.parse_args(argv)

    import jax

    device = jax.devices()[0]
    print(f'{jax.device_count()} x {device.device_kind} ({device.platform}), jax '
          f'{jax.__version__}', flush=True)
    results = []
    for name in args.settings:
        result = run_setting(name, args)
        results.append(result)
        mfu = f"{result['mfu']:.1%}" if result['mfu'] else 'n/a'
        peak = (f"{result['peak_bytes_in_use'] / 2 ** 30:.1f} GiB"
                if result['peak_bytes_in_use'] else 'n/a')
        print(f"{name:>21}: batch {result['global_batch']}, {result['attention']} attention, "
              f"remat {result['remat_policy']}: step {result['step_s'] * 1e3:.0f} ms, "
              f"{result['clips_per_s']:.0f} clips/s, MFU {mfu}, peak memory {peak} "
              f"(compile {result['compile_s']:.0f} s, loss {result['loss']:.3f})", flush=True)
    write_results(args.out, {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'device_kind': device.device_kind, 'platform': device.platform,
        'device_count': jax.device_count(), 'jax': jax.__version__,
        'results': results})


if __name__ == '__main__':
    main()
