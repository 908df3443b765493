"""The command bus: route a command to its domain, load, decide, append, retry on conflict.

One dispatch: check the command (domain, type, payload schema), take the stream's in-process
lock, return the earlier result if this command id was already handled, load the state
(cached, or snapshot + tail), run the business logic, append its events with the loaded
version as expectation, and on a concurrent write reload and decide again (bounded, jittered).
Event ids derive from the command id, so a retried command can never append twice: a
concurrent duplicate loses the append race and then finds the winner's events.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from chronik.aggregate import DomainModel
from chronik.codec import EventRegistry
from chronik.deadline_events import INTERNAL_EVENTS
from chronik.errors import (
    ChronikError,
    ConcurrencyError,
    ConfigurationError,
    DuplicateEventError,
    HandlerError,
    SerializationError,
    UnknownDomain,
    UnknownEventType,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.messages import (
    NO_STREAM,
    AppendResult,
    Command,
    EventData,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
    new_event_id,
)
from chronik.repository import Loaded, Repository
from chronik.store.base import AppendRequest, EventStore, PreparedEvent

__all__ = [
    "CommandBus",
    "CommandResult",
    "Dispatch",
    "DispatchMiddleware",
    "HandlerMiddleware",
    "RetryPolicy",
    "event_id_for",
]

_NAMESPACE: Final = uuid.UUID("6f1d3c52-7a0e-4c3b-9d61-2f8e5b7a9c14")
MAX_COMMAND_ID: Final = 128
_COMMAND_TYPE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")


def event_id_for(command_id: str, index: int) -> str:
    """The id of the ``index``-th event a command produces (the same on every retry)."""
    return str(uuid.uuid5(_NAMESPACE, f"{command_id}\x00{index}"))


class RetryPolicy(msgspec.Struct, frozen=True):
    """How often a command is decided again after losing an append race, and the pauses."""

    attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.2

    def __post_init__(self) -> None:
        if type(self.attempts) is not int or self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be an int >= 1")

    def delay(self, attempt: int) -> float:
        """The jittered pause before retry number ``attempt`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0**attempt) * random.uniform(0.5, 1.5)


class CommandResult(msgspec.Struct, frozen=True):
    """What a command did: the events it appended and the stream's version afterwards.

    ``duplicate`` is true when the bus found that the command id had been handled before and
    appended nothing; ``events`` are then the ones the first dispatch appended. (Two dispatches
    of one id that race may both report False: the store still appends the events only once.)
    """

    command_id: str
    stream: StreamId
    events: list[RecordedEvent]
    version: int | None
    duplicate: bool = False

    @property
    def position(self) -> Position | None:
        """The position of the last event appended (for read-your-writes waits)."""
        return self.events[-1].position if self.events else None


Dispatch = Callable[[Command], Awaitable[CommandResult]]
OutboxRule = Callable[[Any, PreparedEvent, StreamId], Any]
DispatchMiddleware = Callable[[Command, Dispatch], Awaitable[CommandResult]]
HandlerFn = Callable[[Command, Any], Awaitable[list[Any]]]
HandlerMiddleware = Callable[[Command, Any, HandlerFn], Awaitable[list[Any]]]


class CommandBus:
    """Dispatches commands to in-process domain models over one event store."""

    def __init__(
        self,
        store: EventStore,
        registry: EventRegistry,
        *,
        retry: RetryPolicy | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self.registry = registry
        self.retry = retry or RetryPolicy()
        self.repository = Repository(store, registry, cache_size)
        self._models: dict[str, DomainModel] = {}
        self._dispatch_middleware: list[DispatchMiddleware] = []
        self._handler_middleware: list[HandlerMiddleware] = []
        self._locks: dict[StreamId, list[Any]] = {}
        self._chain: Dispatch = self._dispatch
        self._outbox: list[OutboxRule] = []

    # --- configuration ------------------------------------------------------------------------

    def register(self, model: DomainModel) -> DomainModel:
        """Route the model's domain to it."""
        if model.domain in self._models:
            raise ConfigurationError(f"domain {model.domain!r} is already registered")
        self._models[model.domain] = model
        return model

    @property
    def domains(self) -> list[str]:
        """The registered domains, sorted."""
        return sorted(self._models)

    def model(self, domain: str) -> DomainModel:
        """The model of ``domain``; UnknownDomain if none."""
        model = self._models.get(domain)
        if model is None:
            raise UnknownDomain(domain, list(self._models))
        return model

    def use(self, middleware: DispatchMiddleware) -> None:
        """Wrap every dispatch: ``async def mw(command, call_next) -> CommandResult``.

        The first added is the outermost. Middleware may refuse (raise), change the command
        (e.g. add metadata) or observe the result.
        """
        self._dispatch_middleware.append(middleware)
        chain: Dispatch = self._dispatch
        for mw in reversed(self._dispatch_middleware):
            chain = _bind_dispatch(mw, chain)
        self._chain = chain

    def add_outbox(self, rule: OutboxRule) -> None:
        """Record integration messages in the outbox with the events that cause them.

        ``rule(event, prepared_event, stream)`` returns a transport Message, a (Message, kind)
        pair, or None; the message is committed in the same unit of work as the command's
        events (see ``chronik.outbox``), its id defaulting to the event id.
        """
        self._outbox.append(rule)

    def use_handler(self, middleware: HandlerMiddleware) -> None:
        """Wrap every call of business logic: ``async def mw(command, state, call_next)``.

        It runs inside the retry loop, once per decision, with the parsed command.
        """
        self._handler_middleware.append(middleware)

    # --- dispatch -----------------------------------------------------------------------------

    async def dispatch(self, command: Command) -> CommandResult:
        """Handle one command; see the module docstring for the steps."""
        if not isinstance(command, Command):
            raise ValidationError(f"expected a Command, got {command!r}", field="command")
        return await self._chain(command)

    async def _dispatch(self, command: Command) -> CommandResult:
        stream = command.stream  # validates domain, aggregate id and tenant
        if not isinstance(command.type, str) or not _COMMAND_TYPE_RE.fullmatch(command.type):
            raise ValidationError(f"invalid command type {command.type!r}", field="type")
        model = self.model(command.domain)
        command = model.parse(command)
        expected_sequence = command.expected_sequence
        if expected_sequence is not None and (
            type(expected_sequence) is not int or expected_sequence < -1
        ):
            raise ValidationError(
                f"invalid expected_sequence {expected_sequence!r}", field="expected_sequence"
            )
        command_id = command.command_id
        known_id = command_id is not None
        if command_id is None:
            command_id = new_event_id()
        elif not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_COMMAND_ID:
            raise ValidationError(f"invalid command id {command_id!r}", field="command_id")
        metadata = Metadata.of(command.metadata)
        metadata = metadata.with_values(
            correlation_id=metadata.correlation_id or command_id, causation_id=command_id
        )
        lock = self._lock(stream)
        try:
            async with lock[0]:
                return await self._run(
                    model, command, stream, command_id, known_id, metadata, expected_sequence
                )
        finally:
            lock[1] -= 1
            if lock[1] == 0:
                del self._locks[stream]

    def _lock(self, stream: StreamId) -> list[Any]:
        entry = self._locks.get(stream)
        if entry is None:
            entry = self._locks[stream] = [asyncio.Lock(), 0]
        entry[1] += 1
        return entry

    async def _run(
        self,
        model: DomainModel,
        command: Command,
        stream: StreamId,
        command_id: str,
        known_id: bool,
        metadata: Metadata,
        expected_sequence: int | None,
    ) -> CommandResult:
        repository = self.repository
        last_error: WrongExpectedVersion | None = None
        for attempt in range(self.retry.attempts):
            if known_id:
                previous = await self._previous(command_id, stream)
                if previous is not None:
                    return previous
            try:
                loaded = await repository.load(model, stream, use_cache=attempt == 0)
            except ChronikError:
                raise
            except Exception as exc:  # an evolve / apply method that fails on stored events
                raise HandlerError(command.domain, command.type, exc) from exc
            if expected_sequence is not None:
                actual = loaded.version
                if actual != (None if expected_sequence == -1 else expected_sequence):
                    repository.forget(stream)
                    raise WrongExpectedVersion(stream, expected_sequence, actual)
            try:
                decided = await self._decide(model, command, loaded.state)
                if not decided:
                    return CommandResult(command_id, stream, [], loaded.version)
                if model.typed_events:
                    events = [self._typed(e) for e in decided]
                    data = [
                        _raw_event_data(e, metadata, command, command_id, i)
                        if isinstance(e, EventData)  # a raw event of a type not registered
                        else self.registry.to_event_data(e, metadata, event_id_for(command_id, i))
                        for i, e in enumerate(events)
                    ]
                else:
                    events = decided
                    data = [
                        _raw_event_data(e, metadata, command, command_id, i)
                        for i, e in enumerate(events)
                    ]
                expected = NO_STREAM if loaded.version is None else loaded.version
                request = self.store.prepare(stream, data, expected)
                own = _evolvable(model, stream, loaded.version, events, request.events)
                state = self._settle(model, command, loaded.state, own)
            except BaseException:
                repository.forget(stream)  # the state may have been changed in place
                raise
            try:
                if self._outbox and model.typed_events:
                    result = await self._append_with_outbox(request, events)
                else:
                    result = await self.store.append_prepared(request)
            except WrongExpectedVersion as exc:
                repository.forget(stream)
                last_error = exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            except DuplicateEventError:
                repository.forget(stream)
                previous = await self._previous(command_id, stream)
                if previous is None:
                    raise
                return previous
            except BaseException:
                repository.forget(stream)
                raise
            recorded = await self._recorded(request, result)
            if result.first_sequence != (0 if loaded.version is None else loaded.version + 1):
                # The store returned an earlier append of these very events (a concurrent
                # dispatch of this command id) made on another version: our state is not it.
                repository.forget(stream)
                return CommandResult(
                    command_id, stream, recorded, result.last_sequence, duplicate=True
                )
            after = Loaded(
                state,
                result.last_sequence,
                loaded.snapshot_sequence,
                loaded.replayed,
                loaded.load_ms,
            )
            repository.remember(model, stream, after)
            repository.maybe_snapshot(model, stream, after)
            return CommandResult(command_id, stream, recorded, result.last_sequence)
        raise ConcurrencyError(
            f"{command.type} on {stream} lost the append race {self.retry.attempts} times"
        ) from last_error

    async def _decide(self, model: DomainModel, command: Command, state: Any) -> list[Any]:
        async def base(cmd: Command, st: Any) -> list[Any]:
            events: Any = model.decide(cmd, st)
            if inspect.isawaitable(events):
                events = await events
            return list(events)

        call: HandlerFn = base
        for mw in reversed(self._handler_middleware):
            call = _bind_handler(mw, call)
        try:
            return await call(command, state)
        except ChronikError:
            raise
        except Exception as exc:
            raise HandlerError(command.domain, command.type, exc) from exc

    async def _append_with_outbox(self, request: AppendRequest, events: list[Any]) -> AppendResult:
        from chronik.outbox import record

        async with self.store.transaction() as tx:
            tx.append_prepared(request)
            for event, data in zip(events, request.events, strict=True):
                for rule in self._outbox:
                    out = rule(event, data, request.stream)
                    if out is None:
                        continue
                    message, kind = out if isinstance(out, tuple) else (out, "publish")
                    record(tx, message, kind)
        return tx.results[0]

    def _settle(self, model: DomainModel, command: Command, state: Any, events: list[Any]) -> Any:
        try:
            return model.settle(state, events)
        except ChronikError:
            raise
        except Exception as exc:
            raise HandlerError(command.domain, command.type, exc) from exc

    def _typed(self, event: Any) -> Any:
        """A registered event instance (an EventData's payload converted to its class), or a
        raw EventData of a type that is not registered (stored as it is, like store.append)."""
        if isinstance(event, EventData):
            if event.type not in self.registry:
                return event
            cls = self.registry.class_for(event.type)
            try:
                return msgspec.convert(event.payload, cls)
            except msgspec.ValidationError as exc:
                raise SerializationError(
                    f"{event.type} payload does not fit {cls.__qualname__}: {exc}", field="payload"
                ) from None
        if isinstance(event, type) or event is None:
            raise UnknownEventType(repr(event))
        self.registry.name_of(event)
        return event

    async def _recorded(self, request: AppendRequest, result: AppendResult) -> list[RecordedEvent]:
        events = request.events
        if len(result.positions) != len(events) or not result.recorded_at_us:
            got = self.store.read_stream(request.stream, result.first_sequence, limit=len(events))
            return [e async for e in got]
        return [
            RecordedEvent(
                p.event_id,
                request.stream,
                result.first_sequence + i,
                p.type,
                p.schema_version,
                p.payload,
                result.positions[i],
                result.recorded_at_us,
                p.metadata,
                p.content_type,
            )
            for i, p in enumerate(events)
        ]

    async def _previous(self, command_id: str, stream: StreamId) -> CommandResult | None:
        """The result of an earlier dispatch of ``command_id``, if it appended events."""
        first = await self.store.get_event(event_id_for(command_id, 0))
        if first is None:
            return None
        if first.stream != stream:
            raise ValidationError(
                f"command id {command_id!r} was already used for {first.stream}",
                field="command_id",
            )
        events: list[RecordedEvent] = []
        async for event in self.store.read_stream(stream, first.sequence):
            if event.event_id != event_id_for(command_id, len(events)):
                break
            events.append(event)
        return CommandResult(command_id, stream, events, events[-1].sequence, duplicate=True)

    async def close(self) -> None:
        """Wait for background snapshot writes."""
        await self.repository.drain()


def _evolvable(
    model: DomainModel,
    stream: StreamId,
    version: int | None,
    events: list[Any],
    prepared: list[PreparedEvent],
) -> list[Any]:
    """The events a typed model's state evolves with after its command: each typed event as
    it is, each raw EventData as the RecordedEvent a later load gives it (its position and
    record time are provisional until the append); chronik's own deadline events left out."""
    if not model.typed_events:
        return events
    first = 0 if version is None else version + 1
    now = time.time_ns() // 1000
    return [
        RecordedEvent(
            p.event_id,
            stream,
            first + i,
            p.type,
            p.schema_version,
            p.payload,
            Position(0),
            now,
            p.metadata,
            p.content_type,
        )
        if isinstance(e, EventData)
        else e
        for i, (e, p) in enumerate(zip(events, prepared, strict=True))
        if type(e) not in INTERNAL_EVENTS
    ]


def _raw_event_data(
    event: Any, metadata: Metadata, command: Command, command_id: str, index: int
) -> EventData:
    """An EventData from untyped business logic, with the command's metadata and derived id."""
    if not isinstance(event, EventData):
        error = TypeError(f"expected EventData, got {event!r}")
        raise HandlerError(command.domain, command.type, error)
    return EventData(
        event.type,
        event.payload,
        Metadata({**metadata, **Metadata.of(event.metadata)}),
        event_id_for(command_id, index),
        event.schema_version,
        event.content_type,
    )


def _bind_dispatch(mw: DispatchMiddleware, call_next: Dispatch) -> Dispatch:
    async def call(command: Command) -> CommandResult:
        return await mw(command, call_next)

    return call


def _bind_handler(mw: HandlerMiddleware, call_next: HandlerFn) -> HandlerFn:
    async def call(command: Command, state: Any) -> list[Any]:
        return await mw(command, state, call_next)

    return call
