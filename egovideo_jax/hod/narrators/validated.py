"""Validation, retries and the rules fallback around an LLM narrator.

`ValidatedNarrator(primary, fallback=None, retries=1)`; `fallback` None means `RulesNarrator()`.
`narrate_checked(narration, tracks, facts) -> NarrationResult(text, source, attempts,
problems)`: asks `primary` up to `1 + retries` times; each answer is cleaned of chat
artefacts (`clean_answer`), checked with `prompt.validate_narration` and rejected when it
echoes the prompt (its section labels, chat-template tokens, box coordinates); an exception
from the primary counts as a failed attempt. The first valid answer wins (`source='primary'`);
when none is valid the fallback narrates (`source='fallback'`). `problems` lists what was
wrong with each rejected attempt, `attempts` how many times the primary was asked. The caller
counts fallbacks from `source` and adds the clip id to any report.

`narrate_checked_many(requests)` does the same for a batch of `(narration, tracks, facts)`:
each round asks the primary for every clip still without a valid answer, through its
`narrate_many` (bounded concurrency, see `OpenAINarrator`) when it has one.

`name` and `model` are the primary's, so narration cache keys name the back-end asked;
`narrate` returns just the text, so a ValidatedNarrator is itself a `Narrator`.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from egovideo_jax.hod.motion import MotionFacts
from egovideo_jax.hod.narrators import Narrator
from egovideo_jax.hod.narrators.rules import RulesNarrator
from egovideo_jax.hod.prompt import clean_narration, validate_narration
from egovideo_jax.hod.tracks import Tracks

PRIMARY, FALLBACK = 'primary', 'fallback'
_LABEL = re.compile(r'^(?:new\s+|hod\s+|rewritten\s+)?(?:narration|answer|output)\s*:\s*',
                    re.IGNORECASE)
_WRAPPERS = '"\'`*“”‘’ '
# What a model that echoes the prompt or its chat template leaves in an answer.
_PROMPT_ECHO = re.compile(r'original narration:|clip length:|boxes:|motion facts:|'
                          r'<</?sys>>|\[/?inst\]|<\|im_(?:start|end)\|>|<(?:start|end)_of_turn>',
                          re.IGNORECASE)
_COORDINATES = re.compile(r'\[\s*\d*\.\d+\s*,')


@dataclasses.dataclass(frozen=True)
class NarrationResult:
    text: str
    source: str  # PRIMARY or FALLBACK
    attempts: int  # how many times the primary was asked
    problems: list[str]  # why each rejected attempt was rejected, 'attempt N: ...'


def clean_answer(text: str) -> str:
    """A chat answer without its artefacts: what follows the first blank line (base models run
    on into a new example), a 'Narration:' label, wrapping quotes or markdown, Ego4D tags."""
    paragraph = re.split(r'\n\s*\n', text.strip(), maxsplit=1)[0]
    unlabelled = _LABEL.sub('', paragraph.strip(_WRAPPERS))
    return clean_narration(unlabelled.strip(_WRAPPERS))


class ValidatedNarrator:

    def __init__(self, primary: Narrator, fallback: Narrator | None = None, retries: int = 1):
        if retries < 0:
            raise ValueError(f'retries: expected at least 0, got {retries}')
        self.primary = primary
        self.fallback = RulesNarrator() if fallback is None else fallback
        self.retries = retries

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def model(self) -> str:
        return self.primary.model

    def __repr__(self) -> str:
        return (f'ValidatedNarrator({self.primary!r}, fallback={self.fallback!r}, '
                f'retries={self.retries})')

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        return self.narrate_checked(narration, tracks, facts).text

    def narrate_checked(self, narration: str, tracks: Tracks,
                        facts: MotionFacts) -> NarrationResult:
        return self.narrate_checked_many([(narration, tracks, facts)])[0]

    def narrate_checked_many(self, requests: Iterable[tuple[str, Tracks, MotionFacts]]
                             ) -> list[NarrationResult]:
        requests = list(requests)
        problems: list[list[str]] = [[] for _ in requests]
        results: list[NarrationResult | None] = [None] * len(requests)
        for attempt in range(1, self.retries + 2):
            pending = [index for index, result in enumerate(results) if result is None]
            if not pending:
                break
            answers = self._ask_primary([requests[index] for index in pending])
            for index, answer in zip(pending, answers):
                found = _answer_problems(answer, requests[index][2])
                if found:
                    problems[index].extend(f'attempt {attempt}: {problem}' for problem in found)
                else:
                    results[index] = NarrationResult(clean_answer(answer), PRIMARY, attempt,
                                                     problems[index])
        for index, request in enumerate(requests):
            if results[index] is None:
                results[index] = NarrationResult(self.fallback.narrate(*request), FALLBACK,
                                                 self.retries + 1, problems[index])
        return results

    def _ask_primary(self, requests: list[tuple[str, Tracks, MotionFacts]]
                     ) -> list[str | Exception]:
        narrate_many = getattr(self.primary, 'narrate_many', None)
        if narrate_many is not None:
            return narrate_many(requests)
        answers: list[str | Exception] = []
        for request in requests:
            try:
                answers.append(self.primary.narrate(*request))
            except Exception as error:  # a failed call is one more bad answer
                answers.append(error)
        return answers


def _answer_problems(answer: str | Exception, facts: MotionFacts) -> list[str]:
    if isinstance(answer, Exception):
        return [f'{type(answer).__name__}: {answer}']
    text = clean_answer(answer)
    problems = validate_narration(text, facts)
    echo = _PROMPT_ECHO.search(text)
    if echo:
        problems.append(f'echoes the prompt ({echo.group()!r})')
    if _COORDINATES.search(text):
        problems.append('contains box coordinates')
    return problems
