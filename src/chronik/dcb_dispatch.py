"""How the command bus runs a ``DcbDecider``: query, fold, decide, append with the condition.

The steps after routing, in order (``run``): *dedupe* by command id (event ids derive from it),
*read* the command's query and fold the events from ``initial()``, *decide* through the handler
middleware, *append* the decided events tagged, with ``AppendCondition(query, after=position of
the last event read)`` (and the outbox rules' messages in the same unit), and *retry* from a
fresh read when the condition fails, bounded and jittered like a stream conflict.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from chronik import decisions, outbox_rules
from chronik.codec import EventRegistry
from chronik.dcb import AppendCondition, Query
from chronik.dcb_decider import DcbDecider
from chronik.deadline_events import INTERNAL_EVENTS, is_deadline_event
from chronik.decisions import LogicErrors
from chronik.errors import (
    AppendConditionFailed,
    ConcurrencyError,
    DuplicateEventError,
    ValidationError,
)
from chronik.ids import event_id_for
from chronik.messages import (
    AppendResult,
    Command,
    EventData,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
)
from chronik.outbox_rules import OutboxRule
from chronik.store.base import AppendRequest, ConditionCheck, EventStore
from chronik.store.read import READ_PAGE

__all__ = ["DcbRun", "previous", "run"]

HandlerFn = Callable[[Command, Any], Awaitable[list[Any]]]
_INTERNAL_TYPES: frozenset[str] = frozenset(INTERNAL_EVENTS.values())


@dataclasses.dataclass(frozen=True, slots=True)
class DcbRun:
    """One DCB command on its way: what ``run`` needs from the bus."""

    model: DcbDecider
    command: Command
    stream: StreamId  # the command's routing key
    command_id: str
    known_id: bool
    metadata: Metadata


async def run(
    r: DcbRun,
    store: EventStore,
    registry: EventRegistry,
    handler: HandlerFn,
    outbox: Sequence[OutboxRule],
    attempts: int,
    delay: Callable[[int], float],
) -> tuple[list[RecordedEvent], bool]:
    """The events the command appended and whether they came from an earlier dispatch."""
    last_error: AppendConditionFailed | None = None
    for attempt in range(attempts):
        if r.known_id:
            earlier = await previous(store, r.model.domain, r.command_id, r.stream.tenant)
            if earlier:
                return earlier, True
        with LogicErrors(r.command):
            query = r.model.query(r.command)
        state, after = await _fold(r, store, registry, query)
        with LogicErrors(r.command):
            decided = await handler(r.command, state)
        if not decided:
            return [], False
        events = [decisions.typed(registry, e) for e in decided]
        if registry.keys is not None:  # personal-data subject keys
            await registry.load_keys(events)
        data = decisions.event_data(registry, events, r.command, r.command_id, r.metadata)
        with LogicErrors(r.command):
            data = [_tagged(r.model, e, d) for e, d in zip(events, data, strict=True)]
        requests, check = store.prepare_tagged(
            data, AppendCondition(query, after), r.model.domain, r.stream.tenant
        )
        try:
            if outbox:
                result = await _append_with_outbox(store, requests, check, events, outbox)
            else:
                result = await store.append_tagged_prepared(requests, check)
        except AppendConditionFailed as exc:  # another writer changed what we read: again
            last_error = exc
            await asyncio.sleep(delay(attempt))
            continue
        except DuplicateEventError:
            earlier = await previous(store, r.model.domain, r.command_id, r.stream.tenant)
            if not earlier:
                raise
            return earlier, True
        return await _recorded(store, requests, result), False
    raise ConcurrencyError(
        f"{r.command.type} on {r.model.domain} lost the append race {attempts} times"
    ) from last_error


async def previous(
    store: EventStore, domain: str, command_id: str, tenant: str = ""
) -> list[RecordedEvent]:
    """The events an earlier dispatch of ``command_id`` appended (none: not dispatched);
    ValidationError when it was used in another domain or tenant."""
    events: list[RecordedEvent] = []
    while True:
        event = await store.get_event(event_id_for(command_id, len(events)))
        if event is None:
            return events
        if event.stream.domain != domain or event.stream.tenant != tenant:
            raise ValidationError(
                f"command id {command_id!r} was already used for {event.stream}",
                field="command_id",
            )
        events.append(event)


async def _fold(
    r: DcbRun, store: EventStore, registry: EventRegistry, query: Query
) -> tuple[Any, Position | None]:
    """The state the query's events fold into (from ``initial``), and the position of the
    last one; the logic's failures are the command's HandlerError. Only the events of the
    command's tenant count (as for the append's condition).

    Current-version JSON events of registered types fold straight from payload rows
    (``store.read_query_payloads``: no event objects); whole events (``read_query``) take
    over from the first row that needs more (an upcast, another content type, an unregistered
    type, a payload that fails to decode: ``registry.decode`` then says why), and throughout
    while personal-data keys are attached."""
    model, tenant = r.model, r.stream.tenant
    after: Position | None = None
    with LogicErrors(r.command):
        state = model.initial(r.stream.aggregate_id)
        evolve = model.evolver()
        if registry.keys is None:
            state, after, done = await _fold_rows(store, registry, query, tenant, evolve, state)
            if done:
                return state, after
        async for event in store.read_query(query, after, tenant=tenant):
            after = event.position
            if event.type not in registry:
                decoded = event
            elif registry.keys is None:
                decoded = registry.decode(event)
            else:
                decoded = await registry.adecode(event)  # loads personal-data keys first
            if not is_deadline_event(decoded):
                state = evolve(state, decoded)
    return state, after


async def _fold_rows(
    store: EventStore,
    registry: EventRegistry,
    query: Query,
    tenant: str,
    evolve: Callable[[Any, Any], Any],
    state: Any,
) -> tuple[Any, Position | None, bool]:
    """(state, position of the last row folded, whether every event was folded) from the
    payload rows of ``tenant``'s events, stopping before the first row the fast path cannot
    decode."""
    get, internal = registry.current_decoders().get, _INTERNAL_TYPES
    after: Position | None = None
    while True:
        rows = await store.read_query_payloads(query, after, READ_PAGE, tenant)
        last = None
        for row in rows:
            current = get(row[0])
            # (chronik's deadline events and anything not current JSON: whole events decide)
            if current is None or current[0] != row[1] or row[0] in internal:
                return state, _position(last, after), False
            try:
                decoded = current[1](row[2])
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return state, _position(last, after), False
            state = evolve(state, decoded)
            last = row
        after = _position(last, after)
        if len(rows) < READ_PAGE:
            return state, after, True


def _position(row: Sequence[Any] | None, default: Position | None) -> Position | None:
    return default if row is None else Position(row[3], row[4])


def _tagged(model: DcbDecider, event: Any, data: EventData) -> EventData:
    """``data`` with the tags of the decided event (an EventData keeps its own)."""
    if isinstance(event, EventData):
        return data
    return msgspec.structs.replace(data, tags=model.tags_of(event))


async def _append_with_outbox(
    store: EventStore,
    requests: list[AppendRequest],
    check: ConditionCheck | None,
    events: list[Any],
    outbox: Sequence[OutboxRule],
) -> AppendResult:
    async with store.transaction() as tx:
        tx.append_tagged_prepared(requests, check)
        decided = [(e, r.events[0], r.stream) for e, r in zip(events, requests, strict=True)]
        outbox_rules.record_outbox(tx, outbox_rules.outbox_messages(outbox, decided))
    return tx.results[0]


async def _recorded(
    store: EventStore, requests: list[AppendRequest], result: AppendResult
) -> list[RecordedEvent]:
    """The stored events (read back when the adapter did not report every position)."""
    if len(result.positions) != len(requests) or not result.recorded_at_us:
        found = [await store.get_event(r.events[0].event_id) for r in requests]
        return [e for e in found if e is not None]
    return [
        RecordedEvent(
            p.event_id,
            request.stream,
            0,
            p.type,
            p.schema_version,
            p.payload,
            position,
            result.recorded_at_us,
            p.metadata,
            p.content_type,
            p.tags,
        )
        for request, position in zip(requests, result.positions, strict=True)
        for p in request.events
    ]
