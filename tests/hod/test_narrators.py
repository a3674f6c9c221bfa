"""The `openai` and `llama_cpp` narrators and `ValidatedNarrator`, against a fake
OpenAI-compatible server on 127.0.0.1 and fake llama_cpp modules (no model, no network)."""
import collections
import concurrent.futures
import http.server
import json
import logging
import socket
import sys
import threading
import time
import traceback

import pytest

from egovideo_jax.hod import narrators, prompt
from egovideo_jax.hod.narrators import openai as openai_narrator
from egovideo_jax.hod.narrators.openai import NarratorError, OpenAINarrator
from egovideo_jax.hod.narrators.rules import RulesNarrator
from egovideo_jax.hod.narrators.validated import (
    FALLBACK,
    PRIMARY,
    NarrationResult,
    ValidatedNarrator,
    clean_answer,
)
from tests.helpers.hod_scenarios import TIMES, VALID, clip

SECRET = 'sk-test-6f1d0c2e-never-print-me'
MODEL = 'fake-model'
WRONG_HAND = 'C picks up the red cup with the left hand and moves it to the left.'
GARBAGE = '[0.25, 0.55, 0.35, 0.65] -> [0.65, 0.55] ## ## ##'
RETRY_AFTER_SECONDS = 2


# ----------------------------------------------------------------------------- fake server

class FakeChatServer(http.server.ThreadingHTTPServer):
    """Answers each POST with the next behaviour of `script` ('valid' once it is empty),
    records every request and counts the most requests in flight at once."""
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), ChatHandler)
        self.script = collections.deque()
        self.requests = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.release = threading.Event()  # set at teardown to end hanging handlers

    @property
    def base_url(self):
        return f'http://127.0.0.1:{self.server_address[1]}/v1'


class ChatHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass  # keep test output quiet

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        with server.lock:
            server.requests.append({'path': self.path, 'body': body,
                                    'headers': {k.lower(): v for k, v in self.headers.items()}})
            behaviour = server.script.popleft() if server.script else 'valid'
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        self.answering = True
        try:
            getattr(self, f'answer_{behaviour}')(body)
        finally:
            self.done_answering()

    def done_answering(self):
        """Leave the in-flight count before the answer goes out: once the client has it, it
        may send its next request before this handler thread runs again."""
        if self.answering:
            self.answering = False
            with self.server.lock:
                self.server.in_flight -= 1

    def send(self, status, payload, headers=()):
        self.done_answering()
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_chat(self, body, text):
        self.send(200, {'object': 'chat.completion', 'model': body['model'], 'choices': [
            {'index': 0, 'message': {'role': 'assistant', 'content': text},
             'finish_reason': 'stop'}]})

    def answer_valid(self, body):
        self.send_chat(body, VALID)

    def answer_garbage(self, body):
        self.send_chat(body, GARBAGE)

    def answer_empty(self, body):
        self.send_chat(body, '')

    def answer_slow_echo(self, body):
        """Overlaps with other requests, and names the clip so answers can be matched."""
        time.sleep(0.1)
        original = body['messages'][1]['content'].splitlines()[0]
        self.send_chat(body, f'Echo of {original}')

    def answer_not_json(self, body):
        self.send(200, b'<html>proxy error</html>')

    def answer_retry_after(self, body):
        self.send(429, {'error': 'slow down'}, [('Retry-After', str(RETRY_AFTER_SECONDS))])

    def answer_error_500(self, body):
        self.send(500, {'error': 'boom'})

    def answer_bad_request(self, body):
        self.send(400, {'error': 'unknown field frobnicate'})

    def answer_redirect(self, body):
        self.send(307, b'', [('Location', '/elsewhere/chat/completions')])

    def answer_echo_key_401(self, body):
        self.send(401, {'error': f"bad key: {self.headers['Authorization']}"})

    def answer_echo_key_200(self, body):
        self.send(200, {'echo': self.headers['Authorization']})

    def answer_hang(self, body):
        self.server.release.wait(10)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv('no_proxy', '127.0.0.1')  # talk to it directly whatever the environment
    fake = FakeChatServer()
    # A short poll interval: shutdown() waits for it.
    thread = threading.Thread(target=fake.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    fake.shutdown()
    fake.server_close()
    thread.join()


@pytest.fixture
def sleeps(monkeypatch):
    """The narrator's waits, recorded instead of slept."""
    recorded = []
    monkeypatch.setattr(openai_narrator, '_sleep', recorded.append)
    return recorded


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', SECRET)
    return SECRET


def make_openai(server, **options):
    return OpenAINarrator(base_url=server.base_url, model=MODEL, **options)


# ----------------------------------------------------------------------------- openai

def test_request_format(server, api_key, sleeps):
    narration, tracks, facts = clip()
    narrator = make_openai(server, temperature=0.5, max_tokens=64)
    assert narrator.narrate(narration, tracks, facts) == VALID
    [request] = server.requests
    assert request['path'] == '/v1/chat/completions'
    assert request['headers']['authorization'] == f'Bearer {SECRET}'
    assert request['headers']['content-type'] == 'application/json'
    assert request['body'] == {
        'model': MODEL, 'messages': prompt.build_prompt(narration, tracks, facts, TIMES),
        'temperature': 0.5, 'max_tokens': 64}
    assert sleeps == []


def test_key_is_read_at_call_time(server, monkeypatch):
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    narrator = make_openai(server)
    narrator.narrate(*clip())
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-later')
    narrator.narrate(*clip())
    assert 'authorization' not in server.requests[0]['headers']  # local servers need no key
    assert server.requests[1]['headers']['authorization'] == 'Bearer sk-later'


def test_registry_makes_the_openai_narrator(server):
    narrator = narrators.make_narrator('openai', base_url=server.base_url + '/', model=MODEL)
    assert isinstance(narrator, OpenAINarrator) and isinstance(narrator, narrators.Narrator)
    assert (narrator.name, narrator.model) == ('openai', MODEL)
    assert narrator.url == f'{server.base_url}/chat/completions'


def test_429_waits_for_retry_after(server, sleeps):
    server.script.extend(['retry_after'])
    assert make_openai(server).narrate(*clip()) == VALID
    assert sleeps == [RETRY_AFTER_SECONDS] and len(server.requests) == 2


def test_500_is_retried_after_a_jittered_backoff(server, sleeps):
    server.script.extend(['error_500'])
    assert make_openai(server, backoff=1.0).narrate(*clip()) == VALID
    assert len(server.requests) == 2
    [wait] = sleeps
    assert 0.5 <= wait <= 1.0


def test_backoff_grows_exponentially_then_gives_up(server, sleeps):
    server.script.extend(['error_500'] * 4)
    with pytest.raises(NarratorError, match=r'HTTP 500 .*gave up after 4 tries') as raised:
        make_openai(server, max_retries=3, backoff=0.5).narrate(*clip())
    assert raised.value.status == 500 and raised.value.retryable
    assert len(server.requests) == 4 and len(sleeps) == 3
    for retry, wait in enumerate(sleeps):
        assert 0.25 * 2 ** retry <= wait <= 0.5 * 2 ** retry


def test_client_errors_and_redirects_fail_at_once(server, sleeps):
    server.script.extend(['bad_request', 'redirect'])
    narrator = make_openai(server)
    with pytest.raises(NarratorError, match='HTTP 400 .*unknown field frobnicate') as raised:
        narrator.narrate(*clip())
    assert raised.value.status == 400 and not raised.value.retryable
    with pytest.raises(NarratorError, match='HTTP 307') as raised:  # would resend the key
        narrator.narrate(*clip())
    assert [request['path'] for request in server.requests] == ['/v1/chat/completions'] * 2
    assert sleeps == []


def test_timeout_is_retried_then_raised(server, sleeps):
    server.script.extend(['hang', 'hang'])
    start = time.monotonic()
    with pytest.raises(NarratorError, match='timed out'):
        make_openai(server, timeout=0.2, max_retries=1).narrate(*clip())
    assert time.monotonic() - start < 3
    assert len(server.requests) == 2 and len(sleeps) == 1


def test_connection_refused_is_retried_then_raised(sleeps, monkeypatch):
    monkeypatch.setenv('no_proxy', '127.0.0.1')
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    narrator = OpenAINarrator(base_url=f'http://127.0.0.1:{port}/v1', model=MODEL,
                              max_retries=2)
    with pytest.raises(NarratorError, match='refused') as raised:
        narrator.narrate(*clip())
    assert raised.value.status is None and len(sleeps) == 2


def test_malformed_empty_and_garbage_answers(server, sleeps):
    server.script.extend(['not_json', 'empty', 'garbage'])
    narrator = make_openai(server)
    with pytest.raises(NarratorError, match='malformed chat-completions response'):
        narrator.narrate(*clip())
    assert narrator.narrate(*clip()) == ''
    assert narrator.narrate(*clip()) == GARBAGE  # judging answers is ValidatedNarrator's job
    assert len(server.requests) == 3 and sleeps == []


def test_narrate_many_keeps_order_and_bounds_concurrency(server):
    server.script.extend(['slow_echo'] * 10)
    _, tracks, facts = clip()
    requests = [(f'#C C takes cup {index}', tracks, facts) for index in range(10)]
    answers = make_openai(server, max_concurrency=3).narrate_many(requests)
    assert answers == [f'Echo of Original narration: C takes cup {index}' for index in range(10)]
    assert server.max_in_flight == 3


def test_concurrency_bound_holds_across_caller_threads(server):
    server.script.extend(['slow_echo'] * 8)
    narrator = make_openai(server, max_concurrency=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: narrator.narrate(*clip()), range(8)))
    assert len(answers) == 8 and server.max_in_flight == 2


def test_narrate_many_returns_errors_in_place(server, sleeps):
    server.script.extend(['valid', 'bad_request', 'valid'])
    answers = make_openai(server, max_concurrency=1).narrate_many([clip()] * 3)
    assert answers[0] == answers[2] == VALID
    assert isinstance(answers[1], NarratorError) and answers[1].status == 400
    assert make_openai(server).narrate_many([]) == []


def test_rate_limit_spaces_requests(server, monkeypatch):
    starts = []  # when each wait would have ended
    monkeypatch.setattr(openai_narrator, '_sleep',
                        lambda seconds: starts.append(time.monotonic() + seconds))
    narrator = make_openai(server, requests_per_second=2)
    for _ in range(3):
        narrator.narrate(*clip())
    assert len(starts) == 2 and starts[1] - starts[0] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match='requests_per_second'):
        make_openai(server, requests_per_second=0)


def test_the_key_never_leaks(server, api_key, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    server.script.extend(['echo_key_401', 'error_500', 'error_500', 'hang', 'hang',
                          'echo_key_200'])
    narrator = make_openai(server, max_retries=1, timeout=0.2)
    errors = []
    for _ in range(4):
        with pytest.raises(NarratorError) as raised:
            narrator.narrate(*clip())
        errors.append(raised.value)
    assert '[redacted]' in str(errors[0]) and '[redacted]' in str(errors[3])
    assert all(request['headers']['authorization'] == f'Bearer {SECRET}'
               for request in server.requests)  # it was sent, so it could have leaked
    validated = ValidatedNarrator(narrator, retries=0)
    server.script.extend(['echo_key_401'])
    result = validated.narrate_checked(*clip())
    assert result.source == FALLBACK
    texts = [repr(narrator), str(vars(narrator)), repr(validated), caplog.text,
             str(result.problems)]
    for error in errors:
        texts += [str(error), repr(error), ''.join(traceback.format_exception(error))]
    for text in texts:
        assert SECRET not in text
    assert 'retry 1 of 1' in caplog.text  # the retries were logged


# ----------------------------------------------------------------------------- validated

class ScriptedNarrator:
    """A primary that returns (or raises) the given answers in turn."""
    name, model = 'scripted', 'scripted-1'

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    def narrate(self, narration, tracks, facts):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize('answer', [
    VALID,
    f'"{VALID}"',
    f'Narration: {VALID}',
    f'New narration: "{VALID}"',
    f'**{VALID}**',
    f'  {VALID}\n\nExample.\nOriginal narration: C takes the scissors',
    f'#C {VALID}',
])
def test_clean_answer_strips_chat_artefacts(answer):
    assert clean_answer(answer) == VALID


def test_validated_accepts_a_valid_first_answer():
    primary = ScriptedNarrator(f'Narration: "{VALID}"')
    validated = ValidatedNarrator(primary)
    result = validated.narrate_checked(*clip())
    assert result == NarrationResult(VALID, PRIMARY, 1, [])
    assert primary.calls == 1
    assert (validated.name, validated.model) == ('scripted', 'scripted-1')
    assert isinstance(validated, narrators.Narrator)


def test_validated_retries_an_invalid_answer():
    primary = ScriptedNarrator(GARBAGE, VALID)
    result = ValidatedNarrator(primary, retries=1).narrate_checked(*clip())
    assert (result.text, result.source, result.attempts) == (VALID, PRIMARY, 2)
    assert result.problems == ['attempt 1: no letters', 'attempt 1: contains box coordinates']


def test_validated_rejects_prompt_echoes():
    echo = ('Original narration: C picks up the red cup <</SYS>> Boxes: t=0.00s: right hand '
            '[0.55, 0.45, 0.65, 0.55]')
    result = ValidatedNarrator(ScriptedNarrator(echo, VALID)).narrate_checked(*clip())
    assert (result.text, result.source, result.attempts) == (VALID, PRIMARY, 2)
    assert result.problems == ["attempt 1: echoes the prompt ('Original narration:')",
                               'attempt 1: contains box coordinates']


def test_validated_falls_back_to_rules():
    primary = ScriptedNarrator(NarratorError('POST x: HTTP 500 Internal Server Error'),
                               WRONG_HAND)
    validated = ValidatedNarrator(primary, retries=1)
    result = validated.narrate_checked(*clip())
    assert result.source == FALLBACK and result.attempts == 2 and primary.calls == 2
    assert result.text == RulesNarrator().narrate(*clip())
    assert result.problems[0] == 'attempt 1: NarratorError: POST x: HTTP 500 Internal Server Error'
    assert result.problems[1].startswith('attempt 2: says the left hand acts')


def test_validated_without_retries_and_with_a_custom_fallback():
    fallback = ScriptedNarrator('fallback text')
    result = ValidatedNarrator(ScriptedNarrator(''), fallback, retries=0).narrate_checked(*clip())
    assert result == NarrationResult('fallback text', FALLBACK, 1, ['attempt 1: empty narration'])
    with pytest.raises(ValueError, match='retries'):
        ValidatedNarrator(ScriptedNarrator(), retries=-1)


def test_validated_openai_end_to_end(server, sleeps):
    validated = ValidatedNarrator(make_openai(server, max_concurrency=1), retries=1)
    assert (validated.name, validated.model) == ('openai', MODEL)
    server.script.extend(['garbage', 'empty'])
    result = validated.narrate_checked(*clip())
    assert (result.source, result.attempts) == (FALLBACK, 2)
    assert {problem.split(':')[0] for problem in result.problems} == {'attempt 1', 'attempt 2'}
    server.script.extend(['retry_after'])  # retried inside the narrator: one attempt here
    assert validated.narrate_checked(*clip()) == NarrationResult(VALID, PRIMARY, 1, [])
    server.script.extend(['valid', 'garbage', 'valid'])
    results = validated.narrate_checked_many([clip(), clip()])
    assert [(r.text, r.source, r.attempts) for r in results] == [(VALID, PRIMARY, 1),
                                                                 (VALID, PRIMARY, 2)]
    assert len(server.requests) == 2 + 2 + 3


# ----------------------------------------------------------------------------- llama_cpp

def test_llama_cpp_without_the_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'llama_cpp', None)  # makes `import llama_cpp` fail
    with pytest.raises(ImportError, match=r'bash scripts/install_llm_extra\.sh'):
        narrators.make_narrator('llama_cpp', model_path=tmp_path / 'model.gguf')
