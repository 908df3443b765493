"""Events in, commands out: process managers without state, driven by the projection machinery.

A reaction is a projection without tables, so it gets checkpoints, retries with backoff,
parking of a failing stream, status and lag like any projection, and events of one stream in
order. Its handler returns commands; each is dispatched with a command id derived from
(reaction name, event id, index), so an event delivered twice never has a second effect.
Commands carry the event's correlation id (its event id when it has none), and the event id
as ``causation_id`` (``Metadata.caused_by``, the rule sagas and deadlines follow too). A command the
business logic rejects is a normal outcome (logged, not retried).

Reactions record what they send like sagas do (see chronik.saga_record): a rebuild, reset or
retry replays the record and sends nothing that was already sent (a rejected command is not
tried again against today's state), and commands that new code derives from events handled
before the switch are not sent.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from chronik.commands import Dispatch
from chronik.messages import Command, Metadata, RecordedEvent
from chronik.projections.projection import ErrorPolicy, Projection
from chronik.projections.readmodel import ReadModel
from chronik.saga_record import Recorder

__all__ = ["Dispatch", "React", "reaction"]

log = logging.getLogger("chronik.reactions")
React = Callable[[RecordedEvent], Awaitable[Sequence[Command]] | Sequence[Command]]


def reaction(
    name: str,
    types: Sequence[str],
    react: React,
    dispatch: Dispatch,
    *,
    policy: ErrorPolicy | None = None,
    domains: Sequence[str] | None = None,
) -> Projection:
    """A projection that turns events of ``types`` into commands sent through ``dispatch``."""
    projection = Projection(name, policy=policy, domains=domains)
    recorder = Recorder(name, dispatch)

    async def handle(event: RecordedEvent, rm: ReadModel) -> None:
        past = await recorder.past(rm, event)
        result = react(event)
        commands = await result if inspect.isawaitable(result) else result
        record = await recorder.recorded(rm.store, event) if commands or past else {}
        for i, command in enumerate(commands):
            outcome = await recorder.send(
                rm.store, _stamp(name, event, i, command), "", event, past=past, record=record
            )
            if outcome.kind == "rejected":
                log.info(
                    "%s: %s/%s rejected: %s",
                    name,
                    outcome.command.domain,
                    outcome.command.type,
                    outcome.detail,
                )

    projection.on(*types)(handle)
    return projection


def _stamp(name: str, event: RecordedEvent, index: int, command: Command) -> Command:
    return msgspec.structs.replace(
        command,
        command_id=command.command_id or f"{name}:{event.event_id}:{index}",
        metadata=Metadata.caused_by(event, command.metadata),
    )
