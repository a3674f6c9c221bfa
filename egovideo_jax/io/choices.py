"""One check for a value that must be one of a fixed set (a config field, a flag, a file field)."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_choice(value: Any, choices: Collection[Any], name: str) -> None:
    """Raises ValueError naming `name` (e.g. 'config.model.mode' or 'FILE, line 3: side') and
    the allowed values when `value` is not one of `choices`."""
    if value not in choices:
        shown = sorted(choices) if all(isinstance(c, str) for c in choices) else list(choices)
        raise ValueError(f'{name}: {value!r} is not one of {shown}')
