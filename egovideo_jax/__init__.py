"""egovideo-jax: EgoHOD / EgoVideo in JAX/Flax.

Public names: `load`, `EgoVideoModel`, `tokenize`. They are imported on first use, so
`python -m egovideo_jax.<tool> --help` does not pay for importing JAX.
"""
import importlib

_PUBLIC = {
    'load': 'egovideo_jax.api',
    'EgoVideoModel': 'egovideo_jax.api',
    'tokenize': 'egovideo_jax.model.tokenizer',
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
