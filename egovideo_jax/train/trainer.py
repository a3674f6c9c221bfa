"""The co-training loop: one readable function from config to checkpoints and curves."""
from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from egovideo_jax.evaluate.registry import build_evaluators
from egovideo_jax.input.batching import global_batch
from egovideo_jax.input.pipeline import DataConfig, input_stats, make_iterator
from egovideo_jax.model.config import get_model_config
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.model.layout import stack_layers
from egovideo_jax.records.dataset import open_dataset
from egovideo_jax.train import sharding
from egovideo_jax.train.checkpoint import Checkpointer
from egovideo_jax.train.metrics import MetricLogger, compiled_flops, peak_flops
from egovideo_jax.train.optimizer import make_optimizer
from egovideo_jax.train.report import write_report
from egovideo_jax.train.state import abstract_params, create_train_state, make_train_step

MODEL_INPUTS = ('slow', 'fast', 'tokens')
DISTRIBUTED_ENV = ('JAX_COORDINATOR_ADDRESS', 'MEGASCALE_COORDINATOR_ADDRESS')


class NonFiniteLoss(FloatingPointError):
    pass


def maybe_initialize_distributed():
    """`jax.distributed.initialize()` when the environment describes a multi-process job
    (TPU pod slice, SLURM, or an explicit coordinator); nothing on a single host."""
    multi_process = (any(os.environ.get(k) for k in DISTRIBUTED_ENV)
                     or int(os.environ.get('SLURM_NTASKS', '1')) > 1
                     or len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1)
    if not multi_process or jax.distributed.is_initialized():
        return
    try:
        jax.distributed.initialize()
    except Exception as error:
        raise RuntimeError(
            'this looks like a multi-process job (coordinator/SLURM/TPU pod variables are set) '
            f'but jax.distributed.initialize() failed: {error}. Check that every process '
            'started and that the coordinator address is reachable') from error


def model_config_from(config):
    return get_model_config(config.model.variant, config.model.mode, config.model.num_frames,
                            fast_frames=config.model.fast_frames)


def build_module(config) -> EgoVideo:
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.model.dtype]
    return EgoVideo(model_config_from(config), dtype=dtype, scan_layers=config.model.scan_layers,
                    remat_policy=config.model.remat_policy, attention=config.model.attention)


def data_config_from(config, path: str, train: bool) -> DataConfig:
    data = config.data
    return DataConfig(
        path=path, batch_size=data.batch_size, num_frames=config.model.num_frames,
        fast_frames=config.model.fast_frames, mode=config.model.mode,
        crop_size=data.crop_size, text_field=data.text_field,
        flip_swaps_sides=data.flip_swaps_sides, worker_count=data.worker_count,
        prefetch=data.prefetch, on_error=data.on_error,
        max_skip_fraction=data.max_skip_fraction, seed=config.seed, tokenizer=data.tokenizer)


def prepare_demo_data(config, workdir: Path):
    """Builds the embedded demo dataset through the HOD pipeline if `data.build_demo` is set
    and `data.train` is empty; points `data.train` and the demo evaluator at it."""
    if not config.data.build_demo or config.data.train:
        return
    from egovideo_jax.hod.pipeline import build_demo_dataset
    demo = config.demo
    paths = build_demo_dataset(demo.dir or workdir / 'demo_data', demo.train_clips,
                               demo.heldout_clips, demo.seed, size=demo.size,
                               workers=demo.workers, num_objects=demo.num_objects)
    with config.unlocked():
        config.data.train = paths['train']
        for section in config.evals.values():
            if section.get('type') == 'demo_retrieval':
                section.records = section.records or paths['heldout']
                section.actions_csv = section.actions_csv or paths['heldout_actions']


def evaluator_sections(config, verbose: bool) -> dict:
    """`config.evals` less a demo evaluator that has no held-out records (when `data.train`
    was given instead of building the demo data), which is reported."""
    sections = {}
    for name, section in config.evals.items():
        if section.get('type') == 'demo_retrieval' and not section.get('records'):
            if verbose:
                print(f'config.evals.{name}: no held-out demo records set; skipped')
            continue
        sections[name] = section
    return sections


def total_steps_of(config, num_records: int) -> int:
    if config.total_steps > 0:
        return config.total_steps
    return max(1, config.num_epochs * num_records // config.data.batch_size)


def initial_params(config, verbose: bool):
    """Converted weights from `config.init.checkpoint` in the model's layer layout, or None."""
    if not config.init.checkpoint:
        return None
    from egovideo_jax.api import load
    loaded = load(config.init.checkpoint, variant=config.model.variant, mode=config.model.mode,
                  num_frames=config.model.num_frames, seed=config.seed, verbose=verbose)
    params = loaded.params
    return stack_layers(params) if config.model.scan_layers else params


def _host_metrics(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(config, workdir: str | os.PathLike,
          hooks: Sequence[Callable[[int, Any, Any], None]] = ()) -> dict[str, float]:
    """Trains per `config` (configs/cotrain.py); resumes from `workdir` when it holds a
    checkpoint. `hooks` are called as `hook(step, state, metrics)` after every step (e.g.
    custom logging, or tests that interrupt a run). A run that reaches total_steps ends with
    the report (train/report.py). Returns the last logged metrics."""
    started = time.time()
    maybe_initialize_distributed()
    workdir = Path(workdir)
    is_lead = jax.process_index() == 0
    mesh = sharding.make_mesh(config.mesh)
    module = build_module(config)
    model_config = module.config

    if is_lead:
        prepare_demo_data(config, workdir)
    dataset = open_dataset(config.data.train)
    total_steps = total_steps_of(config, len(dataset))
    data_config = data_config_from(config, config.data.train, train=True)
    iterator = make_iterator(data_config, train=True, seed=config.seed,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())

    optim = ConfigDict({**config.optim.to_dict(), 'total_steps': total_steps})
    tx, lr_schedule = make_optimizer(nn.unbox(abstract_params(module, model_config)), optim)
    state, state_shardings = create_train_state(module, model_config, tx, mesh, config.seed,
                                                initial_params(config, is_lead))
    checkpointer = Checkpointer(workdir / 'checkpoints', **config.checkpoint.to_dict())
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state = checkpointer.restore(start_step, state, iterator)
        if is_lead:
            print(f'resumed from {checkpointer.path(start_step)} at step {start_step}')

    evaluators = build_evaluators(evaluator_sections(config, verbose=is_lead),
                                  workdir=workdir / 'eval', mesh=mesh)
    step_fn = make_train_step(module, tx, mesh, state_shardings, config.optim.grad_accum_steps)
    logger = MetricLogger(workdir, total_steps, enabled=is_lead)
    stop = {'requested': False}
    previous_handler = signal.signal(
        signal.SIGTERM, lambda *_: stop.update(requested=True))  # preemption: save, exit 0

    def next_batch():
        local = next(iterator)
        return global_batch({k: local[k] for k in MODEL_INPUTS if k in local}, mesh)

    def check_finite(step: int, metrics: dict):
        # A finite loss with non-finite gradients still poisons the parameters.
        values = {name: float(value) for name, value in
                  jax.device_get({k: metrics[k] for k in ('loss', 'grad_norm')}).items()}
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            good = checkpointer.latest_step()
            where = checkpointer.path(good) if good else 'none saved yet'
            described = ', '.join(f'{name} is {value}' for name, value in bad.items())
            raise NonFiniteLoss(f'{described} at step {step} (batch {step - 1} of this run\'s '
                                f'data order); last good checkpoint: {where}')

    compiled, flops, peak = None, None, None
    last_metrics: dict[str, float] = {}
    window_start, window_steps = time.time(), 0
    clips_per_step = config.data.batch_size
    step = start_step
    try:
        while step < total_steps:
            batch = next_batch()
            if compiled is None:
                compiled = step_fn.lower(state, batch).compile()
                flops = compiled_flops(compiled)
                peak = peak_flops(jax.devices()[0])
                window_start = time.time()
            state, metrics = compiled(state, batch)
            step += 1
            window_steps += 1
            for hook in hooks:
                hook(step, state, metrics)
            if step % config.log_every == 0 or step == total_steps:
                check_finite(step, metrics)
                elapsed = time.time() - window_start
                step_time = elapsed / window_steps
                values = _host_metrics(metrics)
                values.update(lr=float(lr_schedule(step - 1)), step_time_s=step_time,
                              clips_per_s=clips_per_step / step_time)
                if flops and peak:
                    values['mfu'] = flops / step_time / peak
                stats = input_stats(iterator)
                values['skipped_records'] = stats.skipped
                logger.write(step, values)
                logger.console(step, values, eta_seconds=(total_steps - step) * step_time)
                last_metrics = values
                window_start, window_steps = time.time(), 0
            due = [e for e in evaluators.values() if e.should_run(step) or step == total_steps]
            for evaluator in due:
                logger.write(step, evaluator.run(state.params, model_config),
                             prefix=f'eval/{evaluator.name}')
            if checkpointer.should_save(step) or stop['requested'] or step == total_steps:
                check_finite(step, metrics)
                checkpointer.save(step, state, iterator, config.to_dict(),
                                  wait=stop['requested'])
            if stop['requested']:
                if is_lead:
                    print(f'SIGTERM: saved {checkpointer.path(step)}; exiting')
                break
    finally:
        checkpointer.wait()
        checkpointer.close()
        signal.signal(signal.SIGTERM, previous_handler)
        logger.plot_curves()
        logger.close()
    if is_lead and step == total_steps and not stop['requested']:
        write_report(config, workdir, state.params, model_config, step=step,
                     start_step=start_step, started=started)
    return last_metrics
