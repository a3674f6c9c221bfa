"""The training loop, for co-training and fine-tuning alike: `train` takes a config
(configs/cotrain.py, configs/finetune.py) to checkpoints, curves and the report; what a step
optimises is the config's task (tasks.py). `TrainingRun` holds one run's pieces and the
named steps of its loop."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from egovideo_jax.convert.checkpoints import load_params
from egovideo_jax.evaluate.registry import build_evaluators
from egovideo_jax.input.config import DataConfig
from egovideo_jax.input.pipeline import input_stats, make_iterator
from egovideo_jax.model.layout import stack_layers
from egovideo_jax.parallel import sharding
from egovideo_jax.parallel.batching import DevicePrefetcher, global_batch
from egovideo_jax.records.dataset import open_dataset
from egovideo_jax.records.summary import training_records_line
from egovideo_jax.train.checkpoint import Checkpointer
from egovideo_jax.train.metrics import MetricLogger, peak_flops
from egovideo_jax.train.preemption import PreemptionWatcher
from egovideo_jax.train.report import write_report
from egovideo_jax.train.setup import make_setup, slow_frames
from egovideo_jax.train.tasks import Task, task_of

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
        path=path, batch_size=data.batch_size, num_frames=slow_frames(config),
        fast_frames=config.model.fast_frames, mode=config.model.mode,
        crop_size=data.crop_size, text_field=data.text_field,
        caption_threshold=data.get('caption_threshold', 0.1),
        labels=tuple(data.get('labels', ())),
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


def initial_params(config, task: Task, verbose: bool):
    """Converted weights from `config.init.checkpoint` (anything `egovideo_jax.load` reads)
    in the model's layer layout, placed where the task keeps its EgoVideo, or None."""
    if not config.init.checkpoint:
        return None
    model_config, params, report = load_params(config.init.checkpoint, config.model.variant,
                                               config.model.mode, config.model.num_frames,
                                               config.seed)
    if model_config.vision.num_frames != config.model.num_frames:
        raise ValueError(f'{config.init.checkpoint} has a {model_config.vision.num_frames}-'
                         f'frame temporal embedding; set --config.model.num_frames='
                         f'{model_config.vision.num_frames} (inputs of other lengths are '
                         f'resized to it)')
    if verbose:
        print(f'{config.init.checkpoint}: {report.summary()}')
        if task.new_parts():
            print(f'{task.name}: new, from their initialisation: {", ".join(task.new_parts())}')
    params = stack_layers(params) if config.model.scan_layers else params
    return task.initial_params(params)


def train(config, workdir: str | os.PathLike,
          hooks: Sequence[Callable[[int, Any, Any], None]] = ()) -> dict[str, float]:
    """Trains per `config` (configs/cotrain.py); resumes from `workdir` when it holds a
    checkpoint. `hooks` are called as `hook(step, state, metrics)` after every step (e.g.
    custom logging, or tests that interrupt a run). A run that reaches total_steps ends with
    the report (train/report.py). Returns the last logged metrics."""
    started = time.time()
    maybe_initialize_distributed()
    run = TrainingRun(config, Path(workdir))
    try:
        with PreemptionWatcher() as preemption:
            run.loop(hooks, preemption)
    finally:
        run.close()
    if run.is_lead and run.completed:
        write_report(config, run.workdir, run.state.params, run.setup.model_config,
                     step=run.step, start_step=run.start_step, started=started, task=run.task)
    return run.last_metrics


class TrainingRun:
    """One run of `train`: built (and resumed) from the config and the workdir, then stepped
    by `loop`, which after every training step logs, evaluates, checkpoints and stops on
    preemption, each when due."""

    def __init__(self, config, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.is_lead = jax.process_index() == 0
        self.mesh = sharding.make_mesh(config.mesh)

        train_records = open_dataset(config.data.train)
        self.total_steps = total_steps_of(config, len(train_records))
        if self.is_lead:
            print(training_records_line(train_records))
        iterator = make_iterator(data_config_from(config, config.data.train, train=True),
                                 train=True, seed=config.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
        self.setup = make_setup(config, self.mesh, self.total_steps)
        self.task = self.setup.task
        if self.is_lead:
            print(f'task: {self.task.describe()}')
        self.state = self.setup.create_state(
            config.seed, initial_params(config, self.task, self.is_lead))
        self.checkpointer = Checkpointer(workdir / 'checkpoints', **config.checkpoint.to_dict())
        self.start_step = self.checkpointer.latest_step() or 0
        if self.start_step:
            self.state = self.checkpointer.restore(self.start_step, self.state, iterator)
            if self.is_lead:
                print(f'resumed from {self.checkpointer.path(self.start_step)} '
                      f'at step {self.start_step}')
        keys = self.setup.batch_keys
        self.batches = DevicePrefetcher(iterator, lambda local: global_batch(
            {k: local[k] for k in keys}, self.mesh))

        self.evaluators = build_evaluators(evaluator_sections(config, verbose=self.is_lead),
                                           workdir=workdir / 'eval', mesh=self.mesh)
        self.logger = MetricLogger(workdir, self.total_steps, enabled=self.is_lead)
        self.throughput = Throughput(config, self.mesh)
        self.eval_metrics: dict[str, float] = {}  # the latest of every evaluator, for keep_best
        self.last_metrics: dict[str, float] = {}
        self.step = self.start_step
        self.preempted = False
        self._compiled_step = None

    @property
    def completed(self) -> bool:
        return self.step == self.total_steps and not self.preempted

    def loop(self, hooks: Sequence[Callable[[int, Any, Any], None]],
             preemption: PreemptionWatcher):
        while self.step < self.total_steps:
            metrics = self.train_step()
            for hook in hooks:
                hook(self.step, self.state, metrics)
            # Asked of every process at every step: it is a collective on multi-host jobs.
            self.preempted = preemption.should_stop()
            self.log(metrics)
            self.evaluate()
            self.checkpoint(metrics)
            if self.preempted:
                if self.is_lead:
                    print(f'SIGTERM: saved {self.checkpointer.path(self.step)}; exiting')
                return

    def train_step(self):
        batch = next(self.batches)
        if self._compiled_step is None:  # compiled on the first batch, not counted as a step
            self._compiled_step = self.setup.step.lower(self.state, batch).compile()
            self.throughput.restart()
        self.state, metrics = self._compiled_step(self.state, batch)
        self.step += 1
        self.throughput.count_step()
        return metrics

    def is_last_step(self) -> bool:
        return self.step == self.total_steps

    def log(self, metrics):
        if self.step % self.config.log_every and not self.is_last_step():
            return
        _check_finite(self.step, metrics, self.checkpointer)
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        values['lr'] = float(self.setup.lr_schedule(self.step - 1))
        values.update(self.throughput.window())
        values['skipped_records'] = input_stats(self.batches).skipped
        self.logger.write(self.step, values)
        self.logger.console(self.step, values,
                            eta_seconds=(self.total_steps - self.step) * values['step_time_s'])
        self.last_metrics = values

    def evaluate(self):
        for evaluator in self.evaluators.values():
            if evaluator.should_run(self.step) or self.is_last_step():
                params, module = self.evaluated_model(evaluator)
                results = evaluator.run(params, module=module)
                self.logger.write(self.step, results, prefix=f'eval/{evaluator.name}')
                self.eval_metrics.update({f'eval/{evaluator.name}/{name}': float(value)
                                          for name, value in results.items()})

    def evaluated_model(self, evaluator) -> tuple[Any, Any]:
        """(params, module) an evaluator runs: the whole trained model for the evaluators of
        fine-tuned heads (`evaluates_heads`), else the EgoVideo inside it."""
        if getattr(evaluator, 'evaluates_heads', False):
            return self.state.params, self.setup.module
        module, params = self.task.egovideo(self.setup.module, self.state.params)
        return params, module

    def checkpoint(self, metrics):
        if not (self.checkpointer.should_save(self.step) or self.preempted
                or self.is_last_step()):
            return
        _check_finite(self.step, metrics, self.checkpointer)
        # A preempted job waits for the save: the process is about to be killed.
        self.checkpointer.save(self.step, self.state, self.batches, self.config.to_dict(),
                               metrics=dict(self.eval_metrics) or None, wait=self.preempted)

    def close(self):
        self.checkpointer.wait()
        self.checkpointer.close()
        self.logger.plot_curves()
        self.logger.close()


class Throughput:
    """Step time, clips/s and model-FLOPs MFU over the steps since the last log line."""

    def __init__(self, config, mesh):
        self.clips_per_step = config.data.batch_size
        self.model_flops = task_of(config).model_flops().total  # analytic, whole batch
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
