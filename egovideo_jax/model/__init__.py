"""EgoVideo model: Flax modules, variants and tokenizers."""
from egovideo_jax.model.config import (EgoVideoConfig, TextConfig, VARIANTS, VisionConfig,
                                       get_model_config)
from egovideo_jax.model.egovideo import EgoVideo, is_adapter_path
from egovideo_jax.model.text import TextTransformer
from egovideo_jax.model.vit import VisionTransformer
