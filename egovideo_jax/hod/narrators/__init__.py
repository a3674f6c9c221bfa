"""Narrator back-ends: the `Narrator` protocol and the registry that names them.

A narrator turns a clip's original narration, tracks and motion facts into a HOD narration:
`narrate(narration, tracks, facts) -> str`. Its `name` (registry name) and `model` (model id,
or a template version for `rules`) go into the narration cache key with `PROMPT_VERSION`.
LLM back-ends build their messages with `prompt.build_prompt(narration, tracks, facts,
facts.clip_times)` and check answers with `prompt.validate_narration`.

Registry: `NARRATORS` maps a name to a factory (a class or function taking keyword options).
A back-end module registers itself with `@register_narrator('name')`. `make_narrator(name,
**options)` imports `egovideo_jax.hod.narrators.<name>` on first use when the name is not yet
registered, so optional back-ends (and their heavy dependencies) load only when asked for:
`openai` lives in `narrators/openai.py`, `llama_cpp` in `narrators/llama_cpp.py`.
`available_narrators()` lists registered names and the back-end modules of this package.
`rules` (deterministic templates, no model) is registered here.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from egovideo_jax.hod.motion import MotionFacts
from egovideo_jax.hod.narrators.rules import RulesNarrator
from egovideo_jax.hod.tracks import Tracks


@runtime_checkable
class Narrator(Protocol):
    name: str
    model: str

    def narrate(self, narration: str, tracks: Tracks, facts: MotionFacts) -> str:
        ...


NARRATORS: dict[str, Callable[..., Narrator]] = {}


def register_narrator(name: str):
    """Class/function decorator: `NARRATORS[name] = factory`; a name is registered once."""
    def register(factory):
        if name in NARRATORS and NARRATORS[name] is not factory:
            raise ValueError(f'narrator {name!r} is already registered by {NARRATORS[name]!r}')
        NARRATORS[name] = factory
        return factory
    return register


def available_narrators() -> list[str]:
    modules = {info.name for info in pkgutil.iter_modules(__path__)
               if not info.name.startswith('_')}
    return sorted(set(NARRATORS) | modules)


def make_narrator(name: str, **options) -> Narrator:
    if name not in NARRATORS:
        if name not in available_narrators():
            raise ValueError(f'unknown narrator {name!r}; available: {available_narrators()}')
        importlib.import_module(f'{__name__}.{name}')  # the module registers itself
        if name not in NARRATORS:
            raise ValueError(f'module {__name__}.{name} did not register narrator {name!r}')
    return NARRATORS[name](**options)


register_narrator('rules')(RulesNarrator)
