"""Train state, created directly sharded on the mesh, and the jitted train step."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from egovideo_jax.model.config import EgoVideoConfig
from egovideo_jax.model.egovideo import EgoVideo, dummy_inputs
from egovideo_jax.parallel import sharding
from egovideo_jax.train.loss import contrastive_loss


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _dict_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(entry, 'key', getattr(entry, 'name', entry))) for entry in path)


def _follow_params(tree, param_specs: Mapping[tuple[str, ...], PartitionSpec], mesh: Mesh):
    """Shardings for optimizer-state leaves: a leaf whose path ends with a parameter's path
    (Adam's mu/nu) and has its shape is sharded like it; everything else is replicated."""
    def sharding_for(path, leaf):
        keys = _dict_keys(path)
        for start in range(len(keys)):
            spec = param_specs.get(keys[start:])
            if spec is not None and len(spec) <= np.ndim(leaf):
                return NamedSharding(mesh, spec)
        return sharding.replicated(mesh)
    return jax.tree_util.tree_map_with_path(sharding_for, tree)


def init_inputs(module: nn.Module, config: EgoVideoConfig) -> tuple:
    """Zero inputs for `module.init`: the module's own `example_inputs()` when it has one
    (the fine-tuning classifier), else EgoVideo's."""
    example_inputs = getattr(module, 'example_inputs', None)
    return example_inputs() if example_inputs else dummy_inputs(config)


def abstract_params(module: EgoVideo, config: EgoVideoConfig):
    """Boxed (logically annotated) parameter shapes, without computing anything."""
    return jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          *init_inputs(module, config))['params']


def param_shardings(module: EgoVideo, config: EgoVideoConfig, mesh: Mesh):
    specs = nn.get_partition_spec(abstract_params(module, config))
    with mesh:
        return sharding.logical_shardings(specs, mesh)


def train_state_shardings(module: EgoVideo, config: EgoVideoConfig,
                          tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """Where every leaf of the train state lives: parameters by the logical-axis rules,
    optimizer moments like their parameters, counters replicated. Computes nothing."""
    params_sharding = param_shardings(module, config, mesh)
    flat_specs = {tuple(path): s.spec for path, s in
                  traverse_util.flatten_dict(dict(params_sharding)).items()}
    abstract_opt = jax.eval_shape(tx.init, nn.unbox(abstract_params(module, config)))
    return TrainState(step=sharding.replicated(mesh), params=params_sharding,
                      opt_state=_follow_params(abstract_opt, flat_specs, mesh))


def abstract_train_state(module: EgoVideo, config: EgoVideoConfig,
                         tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs with shardings: for ahead-of-time compilation and restoring."""
    shardings = train_state_shardings(module, config, tx, mesh)
    params = nn.unbox(abstract_params(module, config))
    shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        opt_state=jax.eval_shape(tx.init, params))
    return jax.tree_util.tree_map(
        lambda shape, where: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=where),
        shapes, shardings)


def create_train_state(module: EgoVideo, config: EgoVideoConfig, tx: optax.GradientTransformation,
                       mesh: Mesh, seed: int, initial_params=None,
                       shardings: TrainState | None = None) -> tuple[TrainState, TrainState]:
    """(state, state shardings). Parameters are initialised on their devices (never
    gathered on one host); `initial_params` (host arrays, e.g. converted weights; a whole
    parameter tree or a part of one, such as a classifier's backbone) replace the random
    values where given. `shardings`: `train_state_shardings(...)` when the caller has
    them already (each derivation traces the model)."""
    if shardings is None:
        shardings = train_state_shardings(module, config, tx, mesh)

    def init(rng):
        return nn.unbox(module.init(rng, *init_inputs(module, config))['params'])

    with mesh:
        params = jax.jit(init, out_shardings=shardings.params)(jax.random.PRNGKey(seed))
    if initial_params is not None:
        params = _replaced(params, initial_params)
    with mesh:
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                       params=params, opt_state=opt_state)
    return state, shardings


def _replaced(params, initial_params):
    """`params` with the leaves `initial_params` has (same paths) put in their place."""
    flat = traverse_util.flatten_dict(dict(params))
    for path, value in traverse_util.flatten_dict(dict(initial_params)).items():
        if path not in flat:
            raise ValueError(f'initial parameter {"/".join(path)} is not a parameter of the '
                             f'model (e.g. {"/".join(next(iter(flat)))})')
        target = flat[path]
        if np.shape(value) != target.shape:
            raise ValueError(f'initial parameter {"/".join(path)} has shape '
                             f'{np.shape(value)}, the model expects {target.shape}')
        flat[path] = jax.device_put(np.asarray(value, target.dtype), target.sharding)
    return traverse_util.unflatten_dict(flat)


def make_train_step(module: EgoVideo, tx: optax.GradientTransformation, mesh: Mesh,
                    state_shardings: TrainState, grad_accum_steps: int = 1,
                    trainable=None, loss_fn=None, seed: int = 0
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """jit(step) with the state donated. Batches are dicts sharded on the batch axis: by
    default (the contrastive loss) of `slow`, `tokens` and (slowfast) `fast`. `loss_fn`
    (`(params, batch, rng) -> (loss, metrics)`, train/tasks.py) replaces the contrastive
    loss; its `rng` (dropout, mixup) is `fold_in(PRNGKey(seed), step)`, and
    `fold_in(that, k)` for micro-batch k. With `grad_accum_steps` k > 1 the batch is split
    into k micro-batches whose gradients are averaged (each micro-batch's loss sees only its
    own negatives). `trainable` (a tree of bools like the parameters, None: all) restricts
    the logged `grad_norm` to what the optimizer updates.

    The default loss traces the model inside the mesh and the logical-axis rules (the task
    losses do the same), so the activation constraints of the model
    (`nn.with_logical_constraint` at block boundaries) become real sharding constraints and
    mesh-aware kernels (splash attention) see the mesh."""
    if loss_fn is None:
        def loss_fn(params, batch, rng):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(
                    sharding.LOGICAL_AXIS_RULES):
                out = module.apply({'params': params}, batch['slow'], batch['tokens'],
                                   batch.get('fast'))
            return contrastive_loss(out['video'], out['text'], out['logit_scale'], mesh)

    def trainable_norm(grads):
        if trainable is None:
            return optax.global_norm(grads)
        leaves = jax.tree_util.tree_leaves(grads)
        keep = jax.tree_util.tree_leaves(trainable)
        return optax.global_norm([g for g, k in zip(leaves, keep) if k])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
        if grad_accum_steps == 1:
            (_, metrics), grads = grad_fn(state.params, batch, rng)
        else:
            # [B] -> [B/k, k] -> scan over k: each micro-batch keeps every device's share.
            micro = jax.tree_util.tree_map(
                lambda x: jnp.swapaxes(
                    x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]),
                    0, 1), batch)

            def accumulate(carry, indexed):
                index, micro_batch = indexed
                (_, metrics), grads = grad_fn(state.params, micro_batch,
                                              jax.random.fold_in(rng, index))
                return jax.tree_util.tree_map(jnp.add, carry, (grads, metrics)), None

            zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            zero_metrics = jax.eval_shape(lambda: grad_fn(state.params, jax.tree_util.tree_map(
                lambda x: x[0], micro), rng)[0][1])
            zero_metrics = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                  zero_metrics)
            (grads, metrics), _ = jax.lax.scan(
                accumulate, (zeros, zero_metrics),
                (jnp.arange(grad_accum_steps), micro))
            grads = jax.tree_util.tree_map(lambda g: g / grad_accum_steps, grads)
            metrics = jax.tree_util.tree_map(lambda m: m / grad_accum_steps, metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, 'grad_norm': trainable_norm(grads)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=(0,))
