"""The events an aggregate emits to schedule and cancel its deadlines (see chronik.deadlines)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "INTERNAL_EVENTS",
    "DeadlineCancelled",
    "DeadlineScheduled",
    "cancel_deadline",
    "is_deadline_event",
    "schedule",
]


class DeadlineScheduled(msgspec.Struct, frozen=True):
    """An aggregate's deadline: send it ``command`` (with ``payload``) ``after_s`` from now."""

    name: str
    after_s: float
    command: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class DeadlineCancelled(msgspec.Struct, frozen=True):
    """An aggregate cancels its deadline ``name``."""

    name: str


INTERNAL_EVENTS: Final[dict[type[Any], str]] = {
    DeadlineScheduled: "chronik.DeadlineScheduled",
    DeadlineCancelled: "chronik.DeadlineCancelled",
}


def is_deadline_event(event: Any) -> bool:
    """Whether ``event`` is one of chronik's own deadline events: the one rule that keeps them
    from business logic (its state never evolves with them; chronik_deadlines handles them)."""
    return type(event) in INTERNAL_EVENTS


def schedule(
    name: str, after: float, command: str, payload: dict[str, Any] | None = None
) -> DeadlineScheduled:
    """The event a decider returns to schedule a deadline (replacing one of the same name)."""
    return DeadlineScheduled(name, float(after), command, payload or {})


def cancel_deadline(name: str) -> DeadlineCancelled:
    """The event a decider returns to cancel a deadline."""
    return DeadlineCancelled(name)
