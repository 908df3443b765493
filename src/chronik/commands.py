"""The command bus: route a command to its domain, load, decide, append, retry on conflict.

One dispatch, step by step (``CommandBus._dispatch`` and ``_run`` read in this order):

1. *route*: check the command (domain, type, payload schema, id, expected sequence) and find
   its domain's model; the checked command travels as a ``_Routed``;
2. take the stream's lock: in-process, and durable if the domain opted in (a store lease,
   ``chronik.aggregate_locks``);
3. *dedupe*: return the earlier result if this command id was already handled;
4. *load* the state (cached, or snapshot + tail, ``chronik.repository``);
5. *decide*: run the business logic through the handler middleware, turn its events into the
   events to append (``chronik.decisions``) and the state after them;
6. *append* with the loaded version as expectation (with the outbox rules' messages);
7. *retry on conflict*: on a concurrent write reload and decide again (bounded, jittered).

Event ids derive from the command id, so a retried command can never append twice: a
concurrent duplicate loses the append race and then finds the winner's events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from chronik import dcb_dispatch, decisions
from chronik.aggregate_locks import DurableLock, StreamLocks
from chronik.codec import EventRegistry
from chronik.dcb_decider import DcbDecider
from chronik.domain_model import DomainModel
from chronik.emitter import Emitter
from chronik.errors import (
    ChronikError,
    ConcurrencyError,
    ConfigurationError,
    DuplicateEventError,
    HandlerError,
    UnknownDomain,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.ids import event_id_for, new_event_id
from chronik.messages import (
    NO_STREAM,
    TYPE_NAME_RE,
    AppendResult,
    Command,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
)
from chronik.middleware import Chains
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

MAX_COMMAND_ID: Final = 128


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
#: An outbox rule: (decided event, its PreparedEvent, stream) -> Message(s) or None (add_outbox)
OutboxRule = Callable[[Any, PreparedEvent, StreamId], Any]
DispatchMiddleware = Callable[[Command, Dispatch], Awaitable[CommandResult]]
HandlerFn = Callable[[Command, Any], Awaitable[list[Any]]]
HandlerMiddleware = Callable[[Command, Any, HandlerFn], Awaitable[list[Any]]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Routed:
    """A checked command and what its dispatch needs: the model, stream, ids and metadata."""

    model: DomainModel
    command: Command
    stream: StreamId
    command_id: str
    known_id: bool  # the caller gave the id: an earlier dispatch of it may exist
    metadata: Metadata  # of the events: correlation and causation set
    expected_sequence: int | None
    first: str  # the id of the first event the command appends (derived once)


@dataclasses.dataclass(frozen=True, slots=True)
class _Decision:
    """What the logic decided: its events, the append they make, the state after them."""

    events: list[Any]
    request: AppendRequest
    state: Any


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
        self._chains = Chains(self._dispatch)
        self._locks = StreamLocks(store, self.repository.forget)  # durable ones load afresh
        self._outbox: list[OutboxRule] = []
        self.emitter = Emitter()  # after-commit handlers: committed results go there

    # --- configuration ------------------------------------------------------------------------

    def register(self, model: DomainModel, *, lock: DurableLock | None = None) -> DomainModel:
        """Route the model's domain to it; ``lock``: hold a durable lock on the aggregate
        around each of its commands (``chronik.aggregate_locks``)."""
        if model.domain in self._models:
            raise ConfigurationError(f"domain {model.domain!r} is already registered")
        self._locks.set(model, lock)
        self._models[model.domain] = model
        self._chains.add_model(model)
        return model

    @property
    def locks(self) -> StreamLocks:
        """The per-stream locks, and the durable lock policies of the domains (``.set``)."""
        return self._locks

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
        self._chains.use(middleware)

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
        self._chains.use_handler(middleware)

    # --- dispatch -----------------------------------------------------------------------------

    async def dispatch(self, command: Command) -> CommandResult:
        """Handle one command; see the module docstring for the steps."""
        if not isinstance(command, Command):
            raise ValidationError(f"expected a Command, got {command!r}", field="command")
        return await self._chains.dispatch(command)

    async def _dispatch(self, command: Command) -> CommandResult:
        routed = self._route(command)
        async with self._locks.hold(routed.stream):
            if isinstance(routed.model, DcbDecider):
                return self.emitter.committed(await self._run_dcb(routed, routed.model))
            return self.emitter.committed(await self._run(routed))

    def _route(self, command: Command) -> _Routed:
        """Step 1: the command checked, parsed by its domain's model, with ids and metadata."""
        stream = command.stream  # validates domain, aggregate id and tenant
        if not isinstance(command.type, str) or not TYPE_NAME_RE.fullmatch(command.type):
            raise ValidationError(f"invalid command type {command.type!r}", field="type")
        model = self.model(command.domain)
        command = model.parse(command)
        expected = command.expected_sequence
        if expected is not None and (type(expected) is not int or expected < -1):
            raise ValidationError(
                f"invalid expected_sequence {expected!r}", field="expected_sequence"
            )
        command_id = command.command_id
        known_id = command_id is not None
        if command_id is None:
            command_id = new_event_id()
        elif not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_COMMAND_ID:
            raise ValidationError(f"invalid command id {command_id!r}", field="command_id")
        metadata = Metadata.of(command.metadata).of_command(command_id)
        first = "" if isinstance(model, DcbDecider) else event_id_for(command_id, 0)  # DCB: unused
        return _Routed(model, command, stream, command_id, known_id, metadata, expected, first)

    async def _run(self, r: _Routed) -> CommandResult:
        """Steps 3 to 7 under the stream's lock: dedupe, load, decide, append, retry."""
        last_error: WrongExpectedVersion | None = None
        for attempt in range(self.retry.attempts):
            if r.known_id:
                previous = await self._previous(r)
                if previous is not None:
                    return previous
            loaded = await self._load(r, use_cache=attempt == 0)
            decision = await self._decide(r, loaded)
            if decision is None:
                return CommandResult(r.command_id, r.stream, [], loaded.version)
            try:
                result = await self._append(r, decision)
            except WrongExpectedVersion as exc:  # a concurrent write: load and decide again
                last_error = exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            except DuplicateEventError:
                previous = await self._previous(r)
                if previous is None:
                    raise
                return previous
            return await self._appended(r, loaded, decision, result)
        raise ConcurrencyError(
            f"{r.command.type} on {r.stream} lost the append race {self.retry.attempts} times"
        ) from last_error

    async def _run_dcb(self, r: _Routed, model: DcbDecider) -> CommandResult:
        """Steps 3 to 7 for business logic over a query (``chronik.dcb_dispatch``)."""
        if r.expected_sequence is not None:
            raise ValidationError(f"{r.command.domain} has no streams", field="expected_sequence")
        run = dcb_dispatch.DcbRun(model, r.command, r.stream, r.command_id, r.known_id, r.metadata)
        handler = self._chains.handler(model)
        retry = self.retry
        events, again = await dcb_dispatch.run(
            run, self.store, self.registry, handler, self._outbox, retry.attempts, retry.delay
        )
        return CommandResult(r.command_id, r.stream, events, None, duplicate=again)

    async def _load(self, r: _Routed, use_cache: bool) -> Loaded:
        """Step 4: the stream's state, checked against the command's expected sequence."""
        try:
            loaded = await self.repository.load(r.model, r.stream, use_cache=use_cache)
        except ChronikError:
            raise
        except Exception as exc:  # an evolve / apply method that fails on stored events
            raise HandlerError(r.command.domain, r.command.type, exc) from exc
        expected = r.expected_sequence
        if expected is not None and loaded.version != (None if expected == -1 else expected):
            self.repository.forget(r.stream)
            raise WrongExpectedVersion(r.stream, expected, loaded.version)
        return loaded

    async def _decide(self, r: _Routed, loaded: Loaded) -> _Decision | None:
        """Step 5: the logic's events as an append request and the state after them (None:
        no events). A failure drops the cached state, which may have been changed in place."""
        try:
            decided = await self._call_logic(r, self._chains.handler(r.model), loaded.state)
            if not decided:
                return None
            typed = r.model.typed_events
            events = [decisions.typed(self.registry, e) for e in decided] if typed else decided
            reg = self.registry if typed else None  # None: untyped logic returns EventData
            if typed and self.registry.keys is not None:  # personal-data subject keys
                await self.registry.load_keys(events)
            data = decisions.event_data(reg, events, r.command, r.command_id, r.metadata, r.first)
            expected = NO_STREAM if loaded.version is None else loaded.version
            request = self.store.prepare(r.stream, data, expected)
            own = decisions.evolvable(typed, r.stream, loaded.version, events, request.events)
            state = self._call_settle(r, loaded.state, own)
        except BaseException:
            self.repository.forget(r.stream)
            raise
        return _Decision(events, request, state)

    async def _call_logic(self, r: _Routed, call: HandlerFn, state: Any) -> list[Any]:
        try:
            return await call(r.command, state)
        except ChronikError:
            raise
        except Exception as exc:
            raise HandlerError(r.command.domain, r.command.type, exc) from exc

    def _call_settle(self, r: _Routed, state: Any, events: list[Any]) -> Any:
        try:
            return self.repository.settle(r.model, state, events)
        except ChronikError:
            raise
        except Exception as exc:
            raise HandlerError(r.command.domain, r.command.type, exc) from exc

    async def _append(self, r: _Routed, decision: _Decision) -> AppendResult:
        """Step 6: append (with the outbox rules' messages); any failure drops the cache."""
        try:
            if self._outbox and r.model.typed_events:
                return await self._append_with_outbox(decision.request, decision.events)
            return await self.store.append_prepared(decision.request)
        except BaseException:
            self.repository.forget(r.stream)
            raise

    async def _append_with_outbox(self, request: AppendRequest, events: list[Any]) -> AppendResult:
        async with self.store.transaction() as tx:
            tx.append_prepared(request)
            decided = zip(events, request.events, [request.stream] * len(events), strict=True)
            decisions.record_outbox(tx, self._outbox, decided)
        return tx.results[0]

    async def _appended(
        self, r: _Routed, loaded: Loaded, decision: _Decision, result: AppendResult
    ) -> CommandResult:
        """The result of an append: the new state kept (and maybe snapshotted), unless the
        store returned an earlier append of these events made by a concurrent dispatch."""
        recorded = await decisions.recorded(self.store, decision.request, result)
        if result.first_sequence != (0 if loaded.version is None else loaded.version + 1):
            # made on another version than ours: our state is not the stream's
            self.repository.forget(r.stream)
            return CommandResult(
                r.command_id, r.stream, recorded, result.last_sequence, duplicate=True
            )
        after = msgspec.structs.replace(loaded, state=decision.state, version=result.last_sequence)
        after.personal = loaded.personal or self.repository.carries_personal(
            decision.request.events
        )
        self.repository.remember(r.model, r.stream, after)
        self.repository.maybe_snapshot(r.model, r.stream, after)
        return CommandResult(r.command_id, r.stream, recorded, result.last_sequence)

    async def _previous(self, r: _Routed) -> CommandResult | None:
        """Step 3: the result of an earlier dispatch of the command's id, if it appended events."""
        first = await self.store.get_event(r.first)
        if first is None:
            return None
        if first.stream != r.stream:
            raise ValidationError(
                f"command id {r.command_id!r} was already used for {first.stream}",
                field="command_id",
            )
        events: list[RecordedEvent] = []
        async for event in self.store.read_stream(r.stream, first.sequence):
            if event.event_id != event_id_for(r.command_id, len(events)):
                break
            events.append(event)
        return CommandResult(r.command_id, r.stream, events, events[-1].sequence, duplicate=True)

    async def close(self) -> None:
        """Wait for background snapshot writes."""
        await self.repository.drain()
