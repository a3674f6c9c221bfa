"""Orbax checkpoints of the train state, the data-iterator state and the config.

Layout: `WORKDIR/checkpoints/<step>/{state,data_iter,config}`. Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames it when complete, so a crash during
a save leaves the previous checkpoint usable). Kept: the last `keep` checkpoints plus the
best `keep_best` by `best_metric` when one is configured. `state/params` is the same item our
`egovideo_jax.load(DIR)` reads.
"""
from __future__ import annotations

import os
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

STATE, DATA_ITER, CONFIG = 'state', 'data_iter', 'config'


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, *, every_steps: int, keep: int = 3,
                 best_metric: str = '', best_mode: str = 'max', keep_best: int = 1,
                 async_save: bool = True):
        self.directory = Path(directory).resolve()
        self.every_steps = every_steps
        self.best_metric = best_metric
        policies = [checkpoint_managers.LatestN(keep)]
        if best_metric:
            policies.append(checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == 'min',
                n=keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=1,  # the trainer decides when; see should_save
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={STATE: ocp.StandardCheckpointHandler(),
                           DATA_ITER: grain.checkpoint.CheckpointHandler(),
                           CONFIG: ocp.JsonCheckpointHandler()})

    def should_save(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state, data_iterator, config: dict,
             metrics: dict[str, float] | None = None, *, wait: bool = False):
        self.manager.save(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA_ITER: grain.checkpoint.CheckpointSave(data_iterator),
            CONFIG: ocp.args.JsonSave(config)}), metrics=metrics, force=True)
        if wait:
            self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, abstract_state, data_iterator):
        """Restores into `abstract_state`'s shardings (any mesh) and the iterator in place."""
        target = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(target),
            DATA_ITER: grain.checkpoint.CheckpointRestore(data_iterator)}))
        return restored[STATE]

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
