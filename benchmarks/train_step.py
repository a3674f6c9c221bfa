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
  policy (`none`) when XLA's memory analysis of the compiled step fits the free memory, else
  recompiles with `dots_no_batch`, then `full` (B/16 at batch 2 in float32 needs ~35 GB
  without remat on CPU). Model FLOPs (`flops_per_step`, `flops_*`) are the analytic count of
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

Prints a table and writes JSON (`--out`). Runs unchanged on CPU, GPU and TPU hosts; when the
batch does not divide over the local devices it is rounded up to the next multiple (recorded).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / 'benchmarks' / 'results' / 'train_step.json'
# Our variant name -> RefConfig constructor name in tests/helpers/torch_reference.py.
REF_CONFIGS = {'tiny': 'tiny', 'B/16': 'b16', 'L/14-336': 'l14_336'}
TORCH_LR, TORCH_BETAS, TORCH_EPS, TORCH_WEIGHT_DECAY = 4e-5, (0.9, 0.999), 1e-8, 0.01
SLOW_FRAMES, FAST_FRAMES = 4, 16
SCHEDULE_STEPS = 10_000  # the lr schedule's length; it does not change the step's cost
# --remat-policy auto: the config's policy ('none'), else these in order, the first that fits.
AUTO_REMAT_FALLBACKS = ('dots_no_batch', 'full')
MEMORY_HEADROOM = 0.9  # a step may use this fraction of the free memory


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


def load_cotrain_config(name: str = 'b16'):
    spec = importlib.util.spec_from_file_location('cotrain_config', ROOT / 'configs' / 'cotrain.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


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


def timed_steps(step, steps: int, warmup: int, label: str = '') -> dict:
    """Runs `warmup` then `steps` calls of `step` (which must wait for its results); returns
    wall and process CPU seconds (all threads) per call. CPU seconds barely move when other
    jobs share the host; wall seconds do."""
    wall = {'warmup': [], 'timed': []}
    cpu = {'warmup': [], 'timed': []}
    for phase, count in (('warmup', warmup), ('timed', steps)):
        for index in range(count):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[phase].append(time.perf_counter() - start)
            cpu[phase].append(time.process_time() - start_cpu)
            if wall[phase][-1] > 5:  # long steps (B/16 on a CPU): show progress
                print(f'  {label} {phase} step {index + 1}/{count}: {wall[phase][-1]:.1f} s '
                      f'(CPU {cpu[phase][-1]:.1f} s)', flush=True)
    return {'wall': wall, 'cpu': cpu}


def summary(timing: dict, batch: int) -> dict:
    times, cpu = timing['wall']['timed'], timing['cpu']['timed']
    median = statistics.median(times)
    return {'step_time_s': median, 'clips_per_s': batch / median, 'step_times_s': times,
            'min_step_time_s': min(times), 'mean_step_time_s': statistics.fmean(times),
            'warmup_step_times_s': timing['wall']['warmup'],
            'cpu_time_per_step_s': statistics.median(cpu), 'cpu_times_per_step_s': cpu}


def jax_dtype_default() -> str:
    import jax
    return 'float32' if jax.default_backend() == 'cpu' else load_cotrain_config().model.dtype


class PeakRSS:
    """Peak growth of this process's resident memory while the block runs (host memory: the
    whole footprint on CPU). Polls /proc/self/statm; None where there is no /proc."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s, self.base, self.peak = interval_s, None, None

    @staticmethod
    def rss() -> int | None:
        try:
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        import threading
        self.base = self.peak = self.rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(self.interval_s):
                self.peak = max(self.peak, self.rss())
        if self.base is not None:
            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.base is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def increase(self) -> int | None:
        return None if self.base is None else self.peak - self.base


def available_memory_bytes(device) -> int | None:
    """Free memory where `device` executes: the accelerator's (memory_stats) or, on CPU, the
    host's MemAvailable. None when unknown."""
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and stats.get('bytes_limit'):
        return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
    if device.platform != 'cpu':
        return None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def step_memory(compiled) -> dict:
    """XLA's memory analysis of one step: what it allocates beyond the (donated) state."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every back-end implements it
        analysis = None
    if analysis is None:
        return {}
    sizes = {name: int(getattr(analysis, f'{name}_size_in_bytes', 0) or 0)
             for name in ('argument', 'output', 'alias', 'temp')}
    sizes['new_bytes'] = sizes['temp'] + sizes['output'] - sizes['alias']
    return sizes


def variant_config(variant: str, batch: int, args, **model_overrides):
    """configs/cotrain.py:b16 (stage joint) with the variant, batch, dtype and seed replaced."""
    from egovideo_jax.model.config import VARIANTS as MODEL_VARIANTS
    config = load_cotrain_config('b16')
    with config.unlocked():
        config.model.variant = variant
        config.model.dtype = args.dtype
        config.model.attention = args.attention
        config.data.batch_size = batch
        config.data.crop_size = MODEL_VARIANTS[variant].vision.image_size
        config.seed = args.seed
        if args.scan_layers != 'config':
            config.model.scan_layers = args.scan_layers == 'on'
        config.model.update(model_overrides)
    assert config.model.mode == 'slowfast'
    assert (config.model.num_frames, config.model.fast_frames) == (SLOW_FRAMES, FAST_FRAMES)
    return config


def bench_jax(variant: str, batch: int, inputs: dict, args) -> dict:
    import jax

    from egovideo_jax.parallel.batching import global_batch
    from egovideo_jax.parallel import sharding
    from egovideo_jax.train.flops import model_flops_from_config
    from egovideo_jax.train.metrics import compiled_flops, peak_flops
    from egovideo_jax.train.setup import make_setup
    from egovideo_jax.train.trainer import MODEL_INPUTS

    config = variant_config(variant, batch, args)
    if args.remat_policy == 'auto':  # the config's policy, else the lightest that fits
        policies = list(dict.fromkeys([config.model.remat_policy, *AUTO_REMAT_FALLBACKS]))
    else:
        policies = [args.remat_policy]
    device = jax.devices()[0]

    with PeakRSS() as rss:
        # As trainer.train: mesh, module, optimizer, sharded state, jitted step, batch on it.
        mesh = sharding.make_mesh(config.mesh)
        setup = make_setup(config, mesh, SCHEDULE_STEPS)
        start = time.perf_counter()
        state = setup.create_state(config.seed)
        jax.block_until_ready(state)
        init_s = time.perf_counter() - start
        batch_arrays = global_batch({k: inputs[k] for k in MODEL_INPUTS}, mesh)
        jax.block_until_ready(batch_arrays)

        attempts = []
        for policy in policies:
            with config.unlocked():
                config.model.remat_policy = policy
            step_fn = make_setup(config, mesh, SCHEDULE_STEPS).step
            start = time.perf_counter()
            lowered = step_fn.lower(state, batch_arrays)
            lower_s = time.perf_counter() - start
            start = time.perf_counter()
            compiled = lowered.compile()
            compile_s = time.perf_counter() - start
            memory = step_memory(compiled)
            free = available_memory_bytes(device)
            needed = memory.get('new_bytes')
            fits = not (needed and free) or needed <= MEMORY_HEADROOM * free
            attempts.append({'remat_policy': policy, 'compile_s': compile_s,
                             'step_new_bytes': needed, 'available_bytes': free, 'fits': fits})
            if fits:
                break
            del compiled, lowered
        else:
            raise MemoryError(
                f'{variant}: the step needs {needed / 2**30:.1f} GiB beyond its state and '
                f'{device.device_kind} has {free / 2**30:.1f} GiB free with remat '
                f'{policies}; use a smaller --batch or another --remat-policy '
                f'(attempts: {attempts})')

        flops = compiled_flops(compiled)  # per device, compiled.cost_analysis() of this step
        holder = {'state': state}
        del state

        def step():
            holder['state'], metrics = compiled(holder['state'], batch_arrays)  # donated
            jax.block_until_ready((holder['state'], metrics))
            holder['metrics'] = metrics

        timing = timed_steps(step, args.steps, args.warmup, f'[{variant}] JAX')

    result = summary(timing, batch)
    metrics = {k: float(v) for k, v in jax.device_get(holder['metrics']).items()}
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(holder['state'].params))
    del holder, compiled, lowered, step_fn, batch_arrays
    gc.collect()

    count = model_flops_from_config(config)  # analytic, whole global batch
    model_flops = count.total
    peak = peak_flops(device)
    step_time = result['step_time_s']
    result.update(
        init_s=init_s, lower_s=lower_s, compile_s=compile_s,
        compile_attempts=attempts,
        # compiled.cost_analysis() of the executable timed here (per device). With
        # scan_layers XLA counts the layer loop's body once: far below the real work.
        compiled_flops_per_step_per_device=flops,
        # The analytic model FLOPs (egovideo_jax.train.flops) MFU is based on.
        flops_per_step=model_flops, forward_flops_per_step=count.forward,
        flops_breakdown=count.breakdown,
        flops_per_step_per_device=model_flops / mesh.size,
        achieved_flops_per_s_per_device=model_flops / mesh.size / step_time,
        peak_flops_per_device=peak,  # dense bf16 peak (egovideo_jax.train.metrics)
        mfu=model_flops / step_time / (peak * mesh.size) if peak else None,
        memory_analysis=memory, peak_rss_increase_bytes=rss.increase,
        dtype=config.model.dtype, scan_layers=bool(config.model.scan_layers),
        remat_policy=config.model.remat_policy, mesh=dict(mesh.shape),
        num_params=int(num_params), last_loss=metrics['loss'],
        last_grad_norm=metrics.get('grad_norm'))
    jax.clear_caches()
    return result


def torch_device():
    import torch
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def bench_torch(variant: str, batch: int, inputs: dict, args) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    sys.path.insert(0, str(ROOT))  # the reference lives in the test helpers
    from tests.helpers.torch_reference import RefConfig, RefEgoVideo

    torch.set_num_threads(args.torch_threads or os.cpu_count())
    device = torch_device()
    torch.manual_seed(args.seed)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    rss = PeakRSS().__enter__()
    model = RefEgoVideo(getattr(RefConfig, REF_CONFIGS[variant])(), 'slowfast').to(device)
    model.train()
    model.logit_scale.requires_grad_(False)  # config.optim.frozen = ['logit_scale']
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:  # config.optim.no_decay: biases, norms, embeddings, gamma
            (no_decay if param.ndim < 2 or 'embedding' in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{'params': decay, 'weight_decay': TORCH_WEIGHT_DECAY},
         {'params': no_decay, 'weight_decay': 0.0}],
        lr=TORCH_LR, betas=TORCH_BETAS, eps=TORCH_EPS, weight_decay=TORCH_WEIGHT_DECAY)

    slow = torch.from_numpy(inputs['slow']).to(device)
    fast = torch.from_numpy(inputs['fast']).to(device)
    tokens = torch.from_numpy(inputs['tokens']).long().to(device)
    labels = torch.arange(batch, device=device)
    visual_params = dict(model.visual.named_parameters())

    def encode_video():
        if args.torch_fast_grads == 'all':
            return model.encode_video(slow, fast)
        # RefEgoVideo.encode_video with the backbone detached in the fast branch: gradients
        # reach the fast adapters through the shared weights but not the shared weights.
        e_slow = model.visual(slow, use_adapters=False)
        frozen = {name: p if '.adapter.' in name else p.detach()
                  for name, p in visual_params.items()}
        e_fast = functional_call(model.visual, frozen, (fast,), {'use_adapters': True})
        return F.normalize(torch.cat([e_slow, e_fast], dim=-1) @ model.slowfast_projection,
                           dim=-1)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    holder = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        video = encode_video()
        text = model.encode_text(tokens)
        logits = model.logit_scale.exp() * video @ text.t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        optimizer.step()
        sync()
        holder['loss'] = loss.detach()

    try:
        timing = timed_steps(step, args.steps, args.warmup, f'[{variant}] PyTorch')
    finally:
        rss.__exit__(None, None, None)
    result = summary(timing, batch)
    result.update(
        device=str(device), peak_rss_increase_bytes=rss.increase,
        cuda_max_memory_allocated_bytes=(torch.cuda.max_memory_allocated(device)
                                         if device.type == 'cuda' else None),
        device_name=(torch.cuda.get_device_name(device) if device.type == 'cuda'
                     else platform.processor() or platform.machine()),
        num_threads=torch.get_num_threads(), dtype='float32', fast_grads=args.torch_fast_grads,
        num_params=sum(p.numel() for p in model.parameters()),
        last_loss=float(holder['loss']))
    del model, optimizer, holder, slow, fast, tokens
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return result


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
    import jax
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')
    print(f'wrote {out}')
    return report


if __name__ == '__main__':
    main()
