"""EgoVideo model: Flax modules, variants and tokenizers."""
from egovideo_jax.model.config import (
                                       VARIANTS,
                                       EgoVideoConfig,
                                       TextConfig,
                                       VisionConfig,
                                       get_model_config,
)
from egovideo_jax.model.egovideo import EgoVideo, is_adapter_path
from egovideo_jax.model.text import TextTransformer
from egovideo_jax.model.vit import VisionTransformer

__all__ = ['EgoVideo', 'EgoVideoConfig', 'TextConfig', 'TextTransformer', 'VARIANTS',
           'VisionConfig', 'VisionTransformer', 'get_model_config', 'is_adapter_path']
