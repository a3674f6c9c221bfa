"""The JAX side of benchmarks/train_step.py: the step exactly as the trainer builds it
(train/setup.py make_setup on a mesh over all local devices), compiled with the lightest
rematerialisation that fits, then timed."""
from __future__ import annotations

import gc
import importlib.util
import time
from pathlib import Path

from step_timing import PeakRSS, summary, timed_steps

ROOT = Path(__file__).resolve().parents[1]
SLOW_FRAMES, FAST_FRAMES = 4, 16
SCHEDULE_STEPS = 10_000  # the lr schedule's length; it does not change the step's cost
# --remat-policy auto: the config's policy ('none'), else these in order, the first that fits.
AUTO_REMAT_FALLBACKS = ('dots_no_batch', 'full')
MEMORY_HEADROOM = 0.9  # a step may use this fraction of the free memory


def load_cotrain_config(name: str = 'b16'):
    spec = importlib.util.spec_from_file_location('cotrain_config', ROOT / 'configs' / 'cotrain.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


def jax_dtype_default() -> str:
    import jax
    return 'float32' if jax.default_backend() == 'cpu' else load_cotrain_config().model.dtype


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

    from egovideo_jax.parallel import sharding
    from egovideo_jax.parallel.batching import global_batch
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
            compiled = lowered = None  # free the failed attempt before the next compile
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
    # Rebound rather than deleted: step() closes over them. Frees device memory here.
    holder = compiled = lowered = step_fn = batch_arrays = None
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
