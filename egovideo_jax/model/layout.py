"""Convert parameter trees between the unrolled (`blocks_{i}`) and scanned (`blocks`) layouts."""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

_UNROLLED = re.compile(r'^blocks_(\d+)$')


def unstack_layers(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Scanned layout -> unrolled: every `blocks` subtree is split along axis 0."""
    out = {}
    for key, value in tree.items():
        if key == 'blocks' and isinstance(value, Mapping):
            num_layers = jax.tree_util.tree_leaves(value)[0].shape[0]
            for i in range(num_layers):
                out[f'blocks_{i}'] = jax.tree_util.tree_map(lambda x, i=i: x[i], dict(value))
        elif isinstance(value, Mapping):
            out[key] = unstack_layers(value)
        else:
            out[key] = value
    return out


def stack_layers(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Unrolled layout -> scanned: `blocks_0..blocks_{L-1}` become one stacked `blocks`."""
    out, layers = {}, {}
    for key, value in tree.items():
        match = _UNROLLED.match(key)
        if match:
            layers[int(match.group(1))] = value
        elif isinstance(value, Mapping):
            out[key] = stack_layers(value)
        else:
            out[key] = value
    if layers:
        if sorted(layers) != list(range(len(layers))):
            raise ValueError(f'block indices {sorted(layers)} are not 0..{len(layers) - 1}')
        ordered = [dict(layers[i]) for i in range(len(layers))]
        out['blocks'] = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *ordered)
    return out


def is_scanned(tree: Mapping[str, Any]) -> bool:
    """True if any subtree holds a stacked `blocks` entry."""
    return any(key == 'blocks' or (isinstance(value, Mapping) and is_scanned(value))
               for key, value in tree.items())
