"""The train setup in one place: module, optimizer and schedule, state shardings, the
abstract state and the jitted step, built from a train config (configs/cotrain.py,
configs/finetune.py) and a mesh; what the step optimises is the config's task (tasks.py).

The trainer, the ahead-of-time compile tool (train/memory.py), benchmarks/train_step.py and
the multi-device test script all build their step here, so what is compiled for a TPU slice
is what trains.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.parallel.sharding import batch_sharding
from egovideo_jax.train.optimizer import make_optimizer, trainable_mask
from egovideo_jax.train.state import (
    TrainState,
    abstract_params,
    abstract_train_state,
    create_train_state,
    make_train_step,
)
from egovideo_jax.train.tasks import Task, task_of


def build_module(config) -> nn.Module:
    """The module `config.task` trains (EgoVideo, or the fine-tuning classifier)."""
    return task_of(config).build_module()


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    task: Task
    module: nn.Module
    mesh: Mesh
    tx: optax.GradientTransformation
    lr_schedule: Callable[[int], Any]
    total_steps: int
    state_shardings: TrainState
    abstract_state: TrainState  # ShapeDtypeStructs carrying the shardings
    step: Callable[[TrainState, dict], tuple[TrainState, dict]]  # jitted, state donated

    @property
    def model_config(self) -> EgoVideoConfig:
        return self.module.config

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return self.task.batch_keys()

    def create_state(self, seed: int, initial_params=None) -> TrainState:
        state, _ = create_train_state(self.module, self.model_config, self.tx, self.mesh,
                                      seed, initial_params, self.state_shardings)
        return state


def make_setup(config, mesh: Mesh, total_steps: int) -> TrainSetup:
    """Everything the step needs; computes nothing (parameters are only shapes here)."""
    task = task_of(config)
    module = task.build_module()
    params_shape = nn.unbox(abstract_params(module, module.config))
    optim = ConfigDict({**config.optim.to_dict(), 'total_steps': total_steps})
    tx, lr_schedule = make_optimizer(params_shape, optim)
    abstract_state = abstract_train_state(module, module.config, tx, mesh)
    state_shardings = jax.tree_util.tree_map(lambda leaf: leaf.sharding, abstract_state)
    trainable = trainable_mask(params_shape, config.optim.trainable, config.optim.frozen)
    step = make_train_step(module, tx, mesh, state_shardings, config.optim.grad_accum_steps,
                           trainable=trainable, loss_fn=task.loss_fn(module, mesh),
                           seed=config.seed)
    return TrainSetup(task, module, mesh, tx, lr_schedule, total_steps, state_shardings,
                      abstract_state, step)


def abstract_batch(config, model_config: EgoVideoConfig, mesh: Mesh) -> dict:
    """ShapeDtypeStructs of one global batch (`config.data.batch_size` clips) with the
    entries the config's task takes, sharded like the trainer's batches."""
    batch, size = config.data.batch_size, config.data.crop_size
    where = batch_sharding(mesh)

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=where)

    frames = {'slow': slow_frames(config), 'fast': config.model.fast_frames}
    inputs = {}
    for key in task_of(config).batch_keys():
        if key in frames:
            inputs[key] = spec((batch, frames[key], size, size, 3), jnp.float32)
        elif key == 'tokens':
            inputs[key] = spec((batch, model_config.text.context_length), jnp.int32)
        elif key == 'weight':
            inputs[key] = spec((batch,), jnp.float32)
        else:  # label_{name}
            inputs[key] = spec((batch,), jnp.int32)
    return inputs


def slow_frames(config) -> int:
    """Frames of the slow (or only) branch's input: `data.num_frames` where a config sets it
    (single-branch fine-tuning reads 16 frames through a 4-frame temporal table, which the
    model resizes), else the model's."""
    return config.data.get('num_frames', 0) or config.model.num_frames
