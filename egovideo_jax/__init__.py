"""egovideo-jax: EgoHOD / EgoVideo in JAX/Flax."""
from egovideo_jax.api import EgoVideoModel, load
from egovideo_jax.model.tokenizer import tokenize

__all__ = ['EgoVideoModel', 'load', 'tokenize']
