"""The text of a clip: Ego4D narrations without their speaker tag, and the tokenizer (one per
process) that turns the chosen text into the model's 77 token ids."""
from __future__ import annotations

import functools
import re

import numpy as np

from egovideo_jax.model import tokenizer as tokenizers

NARRATION_TAG = re.compile(r'^#\w+\s+')  # Ego4D's speaker tag: '#C C opens ...'
CONTEXT_LENGTH = 77


def clean_narration(text: str) -> str:
    """A narration without Ego4D's speaker tag (`#C C opens the drawer` -> `C opens the
    drawer`): markup, not language, and absent from the benchmarks' queries."""
    return NARRATION_TAG.sub('', text).strip()


def tokenize(text: str, tokenizer: str) -> np.ndarray:
    """`text` as `CONTEXT_LENGTH` token ids by `tokenizer` ('clip' or a SentencePiece *.model
    path)."""
    return _tokenizer(tokenizer)(text)[0]


@functools.lru_cache(maxsize=None)
def _tokenizer(name: str):  # one per process: workers build their own instead of unpickling
    return tokenizers.get_tokenizer(name, context_length=CONTEXT_LENGTH)
