"""The train setup in one place: module, optimizer and schedule, state shardings, the
abstract state and the jitted step, built from a train config (configs/cotrain.py) and a mesh.

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

from egovideo_jax.model.config import EgoVideoConfig, get_model_config
from egovideo_jax.model.egovideo import EgoVideo
from egovideo_jax.parallel.sharding import batch_sharding
from egovideo_jax.train.optimizer import make_optimizer, trainable_mask
from egovideo_jax.train.state import (
    TrainState,
    abstract_params,
    abstract_train_state,
    create_train_state,
    make_train_step,
)

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def model_config_from(config) -> EgoVideoConfig:
    return get_model_config(config.model.variant, config.model.mode, config.model.num_frames,
                            fast_frames=config.model.fast_frames)


def build_module(config) -> EgoVideo:
    return EgoVideo(model_config_from(config), dtype=DTYPES[config.model.dtype],
                    scan_layers=config.model.scan_layers,
                    remat_policy=config.model.remat_policy, attention=config.model.attention)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    module: EgoVideo
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

    def create_state(self, seed: int, initial_params=None) -> TrainState:
        state, _ = create_train_state(self.module, self.model_config, self.tx, self.mesh,
                                      seed, initial_params, self.state_shardings)
        return state


def make_setup(config, mesh: Mesh, total_steps: int) -> TrainSetup:
    """Everything the step needs; computes nothing (parameters are only shapes here)."""
    module = build_module(config)
    params_shape = nn.unbox(abstract_params(module, module.config))
    optim = ConfigDict({**config.optim.to_dict(), 'total_steps': total_steps})
    tx, lr_schedule = make_optimizer(params_shape, optim)
    abstract_state = abstract_train_state(module, module.config, tx, mesh)
    state_shardings = jax.tree_util.tree_map(lambda leaf: leaf.sharding, abstract_state)
    trainable = trainable_mask(params_shape, config.optim.trainable, config.optim.frozen)
    step = make_train_step(module, tx, mesh, state_shardings, config.optim.grad_accum_steps,
                           trainable=trainable)
    return TrainSetup(module, mesh, tx, lr_schedule, total_steps, state_shardings,
                      abstract_state, step)


def abstract_batch(config, model_config: EgoVideoConfig, mesh: Mesh) -> dict:
    """ShapeDtypeStructs of one global batch (`config.data.batch_size` clips), sharded like
    the trainer's batches."""
    batch, size = config.data.batch_size, config.data.crop_size
    where = batch_sharding(mesh)

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=where)

    inputs = {'slow': spec((batch, config.model.num_frames, size, size, 3), jnp.float32),
              'tokens': spec((batch, model_config.text.context_length), jnp.int32)}
    if config.model.mode == 'slowfast':
        inputs['fast'] = spec((batch, config.model.fast_frames, size, size, 3), jnp.float32)
    return inputs
