"""Shared fixtures: small random models and inputs used across test files."""
import os

import numpy as np
import pytest

# With libtpu installed (requirements-tpu-aot.txt), JAX processes take /tmp/libtpu_lockfile;
# the compile-only TPU tests run beside the rest of the suite and its subprocesses.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def perturbed(params, seed=0, scale=0.05):
    """Every parameter moved off its init, so zero-initialised tables and adapters matter."""
    import jax
    leaves, treedef = jax.tree_util.tree_flatten(params)
    gen = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(x) + scale * gen.standard_normal(np.shape(x)).astype(np.float32)
                  for x in leaves])
