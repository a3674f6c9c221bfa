"""The co-training loop: one readable function from config to checkpoints and curves."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from egovideo_jax.convert.checkpoints import load_params
from egovideo_jax.evaluate.registry import build_evaluators
from egovideo_jax.parallel.batching import DevicePrefetcher, global_batch
from egovideo_jax.input.pipeline import DataConfig, input_stats, make_iterator
from egovideo_jax.model.layout import stack_layers
from egovideo_jax.records.dataset import open_dataset
from egovideo_jax.parallel import sharding
from egovideo_jax.train.checkpoint import Checkpointer
from egovideo_jax.train.flops import model_flops_from_config
from egovideo_jax.train.metrics import MetricLogger, peak_flops
from egovideo_jax.train.preemption import PreemptionWatcher
from egovideo_jax.train.report import write_report
from egovideo_jax.train.setup import TrainSetup, make_setup

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


def data_config_from(config, path: str, train: bool) -> DataConfig:
    data = config.data
    return DataConfig(
        path=path, batch_size=data.batch_size, num_frames=config.model.num_frames,
        fast_frames=config.model.fast_frames, mode=config.model.mode,
        crop_size=data.crop_size, text_field=data.text_field,
        flip_swaps_sides=data.flip_swaps_sides, worker_count=data.worker_count,
        prefetch=data.prefetch, on_error=data.on_error,
        max_skip_fraction=data.max_skip_fraction, seed=config.seed, tokenizer=data.tokenizer)




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
    _, params, report = load_params(config.init.checkpoint, config.model.variant,
                                    config.model.mode, config.model.num_frames, config.seed)
    if verbose:
        print(f'{config.init.checkpoint}: {report.summary()}')
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

    dataset = open_dataset(config.data.train)
    total_steps = total_steps_of(config, len(dataset))
    data_config = data_config_from(config, config.data.train, train=True)
    iterator = make_iterator(data_config, train=True, seed=config.seed,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
    setup = make_setup(config, mesh, total_steps)
    model_config = setup.model_config
    state = setup.create_state(config.seed, initial_params(config, is_lead))
    checkpointer = Checkpointer(workdir / 'checkpoints', **config.checkpoint.to_dict())
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state = checkpointer.restore(start_step, state, iterator)
        if is_lead:
            print(f'resumed from {checkpointer.path(start_step)} at step {start_step}')
    batches = DevicePrefetcher(iterator, lambda local: global_batch(
        {k: local[k] for k in MODEL_INPUTS if k in local}, mesh))

    evaluators = build_evaluators(evaluator_sections(config, verbose=is_lead),
                                  workdir=workdir / 'eval', mesh=mesh)
    logger = MetricLogger(workdir, total_steps, enabled=is_lead)
    throughput = Throughput(config, mesh)
    eval_metrics: dict[str, float] = {}  # the latest of every evaluator, for keep_best
    last_metrics: dict[str, float] = {}
    step = start_step
    stopped = False
    try:
        with PreemptionWatcher() as preemption:
            compiled = None
            while step < total_steps:
                batch = next(batches)
                if compiled is None:
                    compiled = setup.step.lower(state, batch).compile()
                    throughput.restart()
                state, metrics = compiled(state, batch)
                step += 1
                throughput.count_step()
                for hook in hooks:
                    hook(step, state, metrics)
                stopped = preemption.should_stop()
                if step % config.log_every == 0 or step == total_steps:
                    _check_finite(step, metrics, checkpointer)
                    last_metrics = _log_train_step(step, metrics, setup, throughput, batches,
                                                   logger)
                for evaluator in evaluators.values():
                    if evaluator.should_run(step) or step == total_steps:
                        results = evaluator.run(state.params, module=setup.module)
                        logger.write(step, results, prefix=f'eval/{evaluator.name}')
                        eval_metrics.update({f'eval/{evaluator.name}/{name}': float(value)
                                             for name, value in results.items()})
                if checkpointer.should_save(step) or stopped or step == total_steps:
                    _check_finite(step, metrics, checkpointer)
                    checkpointer.save(step, state, batches, config.to_dict(),
                                      metrics=dict(eval_metrics) or None, wait=stopped)
                if stopped:
                    if is_lead:
                        print(f'SIGTERM: saved {checkpointer.path(step)}; exiting')
                    break
    finally:
        checkpointer.wait()
        checkpointer.close()
        logger.plot_curves()
        logger.close()
    if is_lead and step == total_steps and not stopped:
        write_report(config, workdir, state.params, model_config, step=step,
                     start_step=start_step, started=started)
    return last_metrics


class Throughput:
    """Step time, clips/s and model-FLOPs MFU over the steps since the last log line."""

    def __init__(self, config, mesh):
        self.clips_per_step = config.data.batch_size
        self.model_flops = model_flops_from_config(config).total  # analytic, whole batch
        peak = peak_flops(mesh.devices.flat[0])
        self.peak = peak * mesh.size if peak else None
        self.restart()

    def restart(self):
        self.started, self.steps = time.time(), 0

    def count_step(self):
        self.steps += 1

    def window(self) -> dict[str, float]:
        step_time = (time.time() - self.started) / max(self.steps, 1)
        values = {'step_time_s': step_time, 'clips_per_s': self.clips_per_step / step_time,
                  'model_flops_per_step': self.model_flops}
        if self.peak:
            values['mfu'] = self.model_flops / step_time / self.peak
        self.restart()
        return values


def _log_train_step(step: int, metrics, setup: TrainSetup, throughput: Throughput, batches,
                    logger: MetricLogger) -> dict[str, float]:
    values = _host_metrics(metrics)
    values['lr'] = float(setup.lr_schedule(step - 1))
    values.update(throughput.window())
    values['skipped_records'] = input_stats(batches).skipped
    logger.write(step, values)
    logger.console(step, values,
                   eta_seconds=(setup.total_steps - step) * values['step_time_s'])
    return values


def _check_finite(step: int, metrics: dict, checkpointer: Checkpointer):
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
