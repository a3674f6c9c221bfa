"""One check for a value that must be one of a fixed set (a config field, a flag, a file field)."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_choice(value: Any, choices: Collection[Any], name: str) -> None:
    """Raises ValueError when `value` is not one of `choices`, as `NAME=VALUE; choose from
    [...]`: `name` says where the value came from (e.g. 'config.model.mode' or 'FILE, line 3:
    side'); string choices are listed sorted, others in their own order."""
    if value not in choices:
        shown = sorted(choices) if all(isinstance(c, str) for c in choices) else list(choices)
        raise ValueError(f'{name}={value!r}; choose from {shown}')
