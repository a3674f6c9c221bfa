"""Parameter trees for tests."""
import numpy as np


def perturbed(params, seed=0, scale=0.05):
    """Every parameter moved off its init, so zero-initialised tables and adapters matter."""
    import jax
    leaves, treedef = jax.tree_util.tree_flatten(params)
    gen = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(x) + scale * gen.standard_normal(np.shape(x)).astype(np.float32)
                  for x in leaves])
