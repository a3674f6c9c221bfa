"""The child process of the `llama_cpp` narrator: owns the `Llama` model, so a native crash
(llama.cpp built for another CPU, a bad GGUF) ends this process, never the caller's.

Protocol: one JSON object per line. stdin's first line is the load request
`{"model_path", "n_ctx", "seed"}`; the answer on the protocol pipe is `{"ok": true}` or
`{"error": message, "type": exception class}`. Every further line is a chat request
`{"messages", "temperature", "max_tokens", "seed"}`, answered by `{"content": text}` or an
error object. Anything llama.cpp prints goes to stderr: file descriptor 1 is moved to stderr
before the model loads, and the protocol uses a private copy of the original stdout.
"""
from __future__ import annotations

import json
import os
import sys


def _answer(protocol, payload: dict):
    protocol.write(json.dumps(payload) + '\n')
    protocol.flush()


def _error(error: BaseException) -> dict:
    return {'error': str(error), 'type': type(error).__name__}


def serve(requests=sys.stdin):
    protocol = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)  # native prints would corrupt the protocol
    sys.stdout = sys.stderr
    load = json.loads(requests.readline())
    try:
        import llama_cpp
        llama = llama_cpp.Llama(model_path=load['model_path'], n_ctx=load['n_ctx'],
                                seed=load['seed'], verbose=False)
    except BaseException as error:  # reported to the parent, which raises it there
        _answer(protocol, _error(error))
        return
    _answer(protocol, {'ok': True})
    for line in requests:
        request = json.loads(line)
        try:
            response = llama.create_chat_completion(**request)
            _answer(protocol, {'content': response['choices'][0]['message']['content'] or ''})
        except Exception as error:
            _answer(protocol, _error(error))


if __name__ == '__main__':
    serve()
