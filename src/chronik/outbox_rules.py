"""What the command bus's outbox rules make of decided events, recorded with them.

An outbox rule (``CommandBus.add_outbox``) turns each decided event into a message for the
outbox, or None; the messages are committed in the same unit of work as the events
(``chronik.outbox``). Each rule runs once per decided event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from chronik.decisions import Decision
from chronik.messages import AppendResult, StreamId
from chronik.outbox import Kind, record
from chronik.store.base import AppendRequest, EventStore, PreparedEvent, UnitOfWork
from chronik.transports.message import Message

__all__ = [
    "OutboxRule",
    "append_with_outbox",
    "decision_messages",
    "outbox_messages",
    "record_outbox",
]

#: An outbox rule: (decided event, its PreparedEvent, stream) -> Message(s) or None (add_outbox)
OutboxRule: TypeAlias = Callable[[Any, PreparedEvent, StreamId], Any]
Made: TypeAlias = tuple[Message, Kind, str]  # a message, its kind and its tenant


def outbox_messages(
    rules: Sequence[OutboxRule],
    decided: Iterable[tuple[Any, PreparedEvent, StreamId]],
) -> list[Made]:
    """(message, kind, tenant) of each message the outbox rules make of the decided events
    (each as the event, its prepared form and its stream): a rule returns a Message, a
    (Message, kind) pair, or None. Each rule runs once per event."""
    made: list[Made] = []
    for event, prepared, stream in decided:
        for rule in rules:
            out = rule(event, prepared, stream)
            if out is not None:
                message, kind = out if isinstance(out, tuple) else (out, "publish")
                made.append((message, kind, stream.tenant))
    return made


def decision_messages(rules: Sequence[OutboxRule], decision: Decision) -> list[Made]:
    """The outbox messages of a stream decision (see ``outbox_messages``)."""
    request = decision.request
    streams = [request.stream] * len(decision.events)
    return outbox_messages(rules, zip(decision.events, request.events, streams, strict=True))


def record_outbox(tx: UnitOfWork, messages: Iterable[Made]) -> None:
    """Record ``messages`` (of ``outbox_messages``) in ``tx``."""
    for message, kind, tenant in messages:
        record(tx, message, kind, tenant)


async def append_with_outbox(
    store: EventStore, messages: list[Made], request: AppendRequest
) -> AppendResult:
    """Append ``request`` with the outbox ``messages`` (of ``decision_messages``) in one unit."""
    if not messages:
        return await store.append_prepared(request)
    async with store.transaction() as tx:
        tx.append_prepared(request)
        record_outbox(tx, messages)
    return tx.results[0]
