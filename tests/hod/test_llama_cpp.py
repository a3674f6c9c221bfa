"""The `llama_cpp` narrator's child process, with a fake `llama_cpp` package on the child's
PYTHONPATH (no model, no llama.cpp build): plumbing, and native crashes that become named,
counted failures with a rules fallback instead of taking the caller down."""
import json
import os
import textwrap

import pytest

from egovideo_jax.hod import narrators, prompt
from egovideo_jax.hod.narrators.llama_cpp import NarratorCrashed
from egovideo_jax.hod.narrators.rules import RulesNarrator
from egovideo_jax.hod.narrators.validated import FALLBACK, PRIMARY, ValidatedNarrator
from tests.helpers.hod_scenarios import VALID, clip

FAKE_LLAMA_CPP = textwrap.dedent('''
    """A stand-in for llama-cpp-python; FAKE_LLAMA_MODE picks how it behaves."""
    import ctypes, json, os, time

    MODE = os.environ['FAKE_LLAMA_MODE']
    LOG = os.environ['FAKE_LLAMA_LOG']

    def _log(*entry):
        with open(LOG, 'a') as log:
            log.write(json.dumps(entry) + '\\n')

    class Llama:
        def __init__(self, **options):
            _log('init', options)
            if MODE == 'load_error':
                raise ValueError('failed to load model from file')

        def create_chat_completion(self, **options):
            _log('chat', options)
            if MODE == 'segfault' or (MODE == 'segfault_once' and
                                      not os.path.exists(LOG + '.crashed')):
                open(LOG + '.crashed', 'w').close()
                ctypes.string_at(0)  # SIGSEGV, as a miscompiled llama.cpp does
            if MODE == 'hang':
                time.sleep(60)
            os.write(1, b'native chatter on stdout\\n')  # what C code may print
            return {'choices': [{'message': {'role': 'assistant',
                                             'content': ' %s\\n' % os.environ['FAKE_ANSWER']}}]}
''')


@pytest.fixture
def fake_llama(tmp_path, monkeypatch):
    """A function mode -> (GGUF path, log path) that puts the fake package in place."""
    package = tmp_path / 'fake_site' / 'llama_cpp'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text(FAKE_LLAMA_CPP)
    monkeypatch.syspath_prepend(str(package.parent))  # this process finds it too
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(package.parent)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
                                 if p]))
    log = tmp_path / 'calls.jsonl'
    monkeypatch.setenv('FAKE_LLAMA_LOG', str(log))
    monkeypatch.setenv('FAKE_ANSWER', VALID)
    model_path = tmp_path / 'tiny.gguf'
    model_path.write_bytes(b'GGUF')

    def use(mode):
        monkeypatch.setenv('FAKE_LLAMA_MODE', mode)
        return model_path, log
    return use


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_plumbing_through_the_child_process(fake_llama, tmp_path):
    model_path, log = fake_llama('valid')
    with pytest.raises(FileNotFoundError, match='missing.gguf'):
        narrators.make_narrator('llama_cpp', model_path=tmp_path / 'missing.gguf')
    narrator = narrators.make_narrator('llama_cpp', model_path=model_path, n_ctx=512, seed=3)
    try:
        assert (narrator.name, narrator.model) == ('llama_cpp', 'tiny.gguf')
        narration, tracks, facts = clip()
        # The fake also prints to file descriptor 1: the protocol is not disturbed.
        assert narrator.narrate(narration, tracks, facts) == VALID
        assert narrator.narrate(narration, tracks, facts) == VALID
        assert calls(log) == [
            ['init', {'model_path': str(model_path), 'n_ctx': 512, 'seed': 3,
                      'verbose': False}],
            *[['chat', {'messages': prompt.build_prompt(narration, tracks, facts, facts.clip_times),
                        'temperature': 0.2, 'max_tokens': 200, 'seed': 3}]] * 2]
        assert narrator._worker.process.pid != os.getpid()
    finally:
        narrator.close()


def test_a_load_failure_is_reported_at_construction(fake_llama):
    model_path, _ = fake_llama('load_error')
    with pytest.raises(RuntimeError, match=r'loading .*tiny\.gguf failed: ValueError: '
                                           r'failed to load model'):
        narrators.make_narrator('llama_cpp', model_path=model_path)


def test_a_segfault_is_a_named_error_the_validated_narrator_falls_back_from(fake_llama):
    model_path, log = fake_llama('segfault')
    narrator = narrators.make_narrator('llama_cpp', model_path=model_path)
    narration, tracks, facts = clip()
    with pytest.raises(NarratorCrashed) as raised:
        narrator.narrate(narration, tracks, facts)
    message = str(raised.value)
    assert 'llama_cpp back-end (model tiny.gguf)' in message
    assert repr(narration) in message and 'killed by SIGSEGV' in message
    assert 'Segmentation fault' in message  # the child's faulthandler report, quoted
    assert (raised.value.backend, raised.value.model, raised.value.narration) == (
        'llama_cpp', 'tiny.gguf', narration)

    result = ValidatedNarrator(narrator, retries=1).narrate_checked(narration, tracks, facts)
    assert result.source == FALLBACK and result.attempts == 2
    assert result.text == RulesNarrator().narrate(narration, tracks, facts)
    assert len(result.problems) == 2
    assert all('NarratorCrashed' in problem and 'SIGSEGV' in problem
               for problem in result.problems), result.problems
    # Each attempt started a fresh child that loaded the model again.
    assert [entry[0] for entry in calls(log)] == ['init', 'chat'] * 3
    narrator.close()


def test_after_a_crash_the_next_call_gets_a_fresh_child(fake_llama):
    model_path, log = fake_llama('segfault_once')
    narrator = narrators.make_narrator('llama_cpp', model_path=model_path)
    result = ValidatedNarrator(narrator, retries=1).narrate_checked(*clip())
    assert (result.text, result.source, result.attempts) == (VALID, PRIMARY, 2)
    assert 'NarratorCrashed' in result.problems[0] and 'SIGSEGV' in result.problems[0]
    narrator.close()


def test_a_hung_back_end_is_killed_after_the_timeout(fake_llama):
    model_path, _ = fake_llama('hang')
    narrator = narrators.make_narrator('llama_cpp', model_path=model_path, timeout=2)
    with pytest.raises(NarratorCrashed, match=r'no answer within 2 s, killed'):
        narrator.narrate(*clip())
    narrator.close()
