"""Rebuilding an exception from its message and fields as they travelled (``from_data``).

Plain reflection over the class it is given: it imports nothing of chronik, so
``chronik.errors`` builds ``ChronikError.from_data`` on it without a cycle.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["rebuild"]

E = TypeVar("E", bound=BaseException)


def rebuild(cls: type[E], message: str, data: Mapping[str, Any] | None = None) -> E:
    """An instance of ``cls`` rebuilt from ``message`` and ``data``: through its constructor
    when ``data`` holds what it takes, else with the fields set on a bare instance. ``str()``
    of the result is ``message`` either way."""
    fields = dict(data or {})
    try:
        err = _construct(cls, message, fields)
    except Exception:  # fields that do not fit the constructor: keep them as they came
        err = None
    if err is None:
        err = cls.__new__(cls)
    for name, value in fields.items():
        if name.isidentifier() and not name.startswith("_"):
            setattr(err, name, value)
    err.args = (message,)
    return err


def _construct(cls: type[E], message: str, fields: dict[str, Any]) -> E | None:
    args: dict[str, Any] = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind is p.VAR_POSITIONAL:  # Exception's own constructor: the message
            return cls(message)
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.name == "message":
            args[p.name] = message
        elif p.name in fields:
            args[p.name] = fields[p.name]
        elif p.default is p.empty:
            return None  # the constructor needs a field that did not come
    return cls(**args)
