"""The command bus: route a command to its domain, load, decide, append, retry on conflict.

One dispatch, step by step (``CommandBus._dispatch`` and ``_run`` read in this order):

1. *route*: check the command (domain, type, payload schema, id, expected sequence) and find
   its domain's model; the checked command travels as a ``Routed``;
2. take the stream's lock: in-process (no lock object while nobody waits), and durable if the
   domain opted in (a store lease, ``chronik.aggregate_locks``);
3. *dedupe*: return the earlier result if this command id was already handled (at once, or
   after the decision: see below);
4. *load* the state (cached, or snapshot + tail, ``chronik.repository``);
5. *decide*: run the business logic through the handler middleware, turn its events into the
   events to append (``chronik.decisions``) and the state after them;
6. *append* with the loaded version as expectation (with the outbox rules' messages);
7. *retry on conflict*: on a concurrent write reload and decide again (bounded, jittered).

Event ids derive from the command id, so a retried command never appends twice: a concurrent
duplicate loses the append race and then finds the winner's events.

A command id this process has not appended lately skips the read of step 3 (*lazy dedupe*):
the append's unique event ids find an earlier dispatch, and a command that fails, decides
nothing or meets stored events of its id then looks for the earlier result, as step 3 would
have. A decision that makes outbox messages (recorded once only) reads it before its append.
Only a dispatch of the id by another process, appended right after the version this process
had cached, is then told ``duplicate=False`` (same events).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import msgspec

from chronik import dcb_dispatch, decisions, outbox_rules
from chronik.aggregate_locks import DurableLock, StreamLocks
from chronik.codec import EventRegistry
from chronik.dcb_decider import DcbDecider
from chronik.decisions import Decision, LogicErrors, Routed, logic_failed
from chronik.domain_model import DomainModel
from chronik.emitter import Emitter
from chronik.errors import (
    ConcurrencyError,
    ConfigurationError,
    DuplicateEventError,
    UnknownDomain,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.ids import event_id_for
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
from chronik.middleware import Chains, as_list
from chronik.outbox_rules import OutboxRule
from chronik.repository import Loaded, Repository
from chronik.retry_policy import RetryPolicy
from chronik.store.base import AppendRequest, EventStore

__all__ = [
    "CommandBus",
    "CommandResult",
    "Dispatch",
    "DispatchMiddleware",
    "HandlerMiddleware",
    "RetryPolicy",
    "event_id_for",
]

RECENT_IDS: Final = 10_000  # command ids appended here that the bus remembers (lazy dedupe)
_new: Final = tuple.__new__  # a NamedTuple made without its Python __new__


class CommandResult(msgspec.Struct, frozen=True):
    """What a command did: the events it appended and the stream's version afterwards.

    ``duplicate`` is true when the bus found that the command id had been handled before and
    appended nothing; ``events`` are then the ones the first dispatch appended. (Two dispatches
    of one id that race may both report False, as may one on a state cached before another
    process's dispatch of the id: the store still appends the events only once.)
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
        self._chains = Chains(self._dispatch)
        self._locks = StreamLocks(store, self.repository.forget)  # durable ones load afresh
        self._outbox: list[OutboxRule] = []
        self.emitter = Emitter()  # after-commit handlers: committed results go there
        self._encodings = decisions.Encodings(registry)
        self._dcb: set[str] = set()  # the domains of DcbDeciders
        self._appended_ids: OrderedDict[str, None] = OrderedDict()  # the latest, for dedupe

    # --- configuration ------------------------------------------------------------------------

    def register(self, model: DomainModel, *, lock: DurableLock | None = None) -> DomainModel:
        """Route the model's domain to it; ``lock``: hold a durable lock on the aggregate
        around each of its commands (``chronik.aggregate_locks``)."""
        if model.domain in self._models:
            raise ConfigurationError(f"domain {model.domain!r} is already registered")
        self._locks.set(model, lock)
        self._models[model.domain] = model
        if isinstance(model, DcbDecider):
            self._dcb.add(model.domain)
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
        stream, locks = routed.stream, self._locks
        if stream.domain in self._dcb or not locks.take(stream):  # queue for the lock
            async with locks.hold(stream):
                return await self._handle(routed)
        try:  # free (nobody holds or waits for it, no durable lock): held at once
            return self.emitter.committed(await self._run(routed))
        finally:
            locks.give(stream)

    async def _handle(self, routed: Routed) -> CommandResult:  # steps 3 to 7, under the lock
        if routed.stream.domain in self._dcb:
            return self.emitter.committed(await self._run_dcb(routed))
        return self.emitter.committed(await self._run(routed))

    def _route(self, command: Command) -> Routed:
        """Step 1: the command checked, parsed by its domain's model, with ids and metadata."""
        stream = self.repository.stream_of(command)  # validates the names
        if not isinstance(command.type, str) or not TYPE_NAME_RE.fullmatch(command.type):
            raise ValidationError(f"invalid command type {command.type!r}", field="type")
        model = self._models.get(command.domain) or self.model(command.domain)  # UnknownDomain
        return decisions.route(model, command, stream, command.domain in self._dcb)

    async def _run(self, r: Routed) -> CommandResult:
        """Steps 3 to 7 under the stream's lock: dedupe, load, decide, append, retry."""
        last_error: WrongExpectedVersion | None = None
        for attempt in range(self.retry.attempts):
            loaded = self.repository.cached(r.stream) if attempt == 0 else None
            hit = loaded is not None  # lazy dedupe (module docstring): step 3 waits
            lazy = attempt == 0 and r.known_id and r.command_id not in self._appended_ids
            if r.known_id and not lazy:
                previous = await self._previous(r)
                if previous is not None:
                    return previous
            try:
                if loaded is None:
                    loaded = await self._load(r, use_cache=attempt == 0)
                elif r.expected_sequence is not None:
                    self._check_expected(r, loaded)
                decision = await self._decide(r, loaded)
            except Exception as exc:
                if lazy:  # the earlier result, if the id had one, as a first check gives it
                    return await self._previous_or(r, exc)
                raise
            if decision is None:
                if lazy and (previous := await self._previous(r)) is not None:
                    return previous
                return CommandResult(r.command_id, r.stream, [], loaded.version)
            try:  # step 6 (with the outbox rules' messages)
                if self._outbox and r.model.typed_events:
                    messages = outbox_rules.decision_messages(self._outbox, decision)
                    if messages and lazy:  # recorded once only: step 3 first, after all
                        lazy = False
                        if (previous := await self._previous(r)) is not None:
                            self.repository.forget(r.stream)  # decided on: may have changed
                            return previous
                    req = decision.request
                    result = await outbox_rules.append_with_outbox(self.store, messages, req)
                else:
                    result = await self.store.append_prepared(decision.request)
            except BaseException as exc:
                self.repository.forget(r.stream)  # whatever happened, the cache cannot tell
                if isinstance(exc, WrongExpectedVersion):  # a concurrent write: decide again
                    last_error = exc
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                if isinstance(exc, Exception) and (lazy or isinstance(exc, DuplicateEventError)):
                    return await self._previous_or(r, exc)  # the id's events are not ours
                raise
            if result.first_sequence != (0 if loaded.version is None else loaded.version + 1):
                return await self._made_before(r, decision, result, lazy)
            recorded = decisions.recorded_now(decision.request, result)
            if recorded is None:
                recorded = await decisions.recorded(self.store, decision.request, result)
            return self._appended(r, loaded, decision, result, recorded, hit)
        raise ConcurrencyError(
            f"{r.command.type} on {r.stream} lost the append race {self.retry.attempts} times"
        ) from last_error

    async def _run_dcb(self, r: Routed) -> CommandResult:
        """Steps 3 to 7 for business logic over a query (``chronik.dcb_dispatch``)."""
        model = cast(DcbDecider, r.model)
        if r.expected_sequence is not None:
            raise ValidationError(f"{r.command.domain} has no streams", field="expected_sequence")
        metadata = Metadata(r.metadata)
        run = dcb_dispatch.DcbRun(model, r.command, r.stream, r.command_id, r.known_id, metadata)
        handler, retry = self._chains.handler(model), self.retry
        events, again = await dcb_dispatch.run(
            run, self.store, self.registry, handler, self._outbox, retry.attempts, retry.delay
        )
        return CommandResult(r.command_id, r.stream, events, None, duplicate=again)

    async def _load(self, r: Routed, use_cache: bool) -> Loaded:
        """Step 4: the stream's state, checked against the command's expected sequence."""
        with LogicErrors(r.command):  # an evolve / apply method that fails on stored events
            loaded = await self.repository.load(r.model, r.stream, use_cache=use_cache)
        self._check_expected(r, loaded)
        return loaded

    def _check_expected(self, r: Routed, loaded: Loaded) -> None:
        expected = r.expected_sequence
        if expected is not None and loaded.version != (None if expected == -1 else expected):
            self.repository.forget(r.stream)
            raise WrongExpectedVersion(r.stream, expected, loaded.version)

    async def _decide(self, r: Routed, loaded: Loaded) -> Decision | None:
        """Step 5: the logic's events as an append request and the state after them (None:
        no events). A failure drops the cached state, which may have been changed in place."""
        try:
            try:  # as ``with LogicErrors(r.command)``, without its object on the hot path
                if self._chains.bare_handlers:  # no middleware: the chain's innermost call
                    decided = r.model.decide(r.command, loaded.state)
                    if type(decided) is not list:
                        decided = await as_list(decided)
                else:
                    decided = await self._chains.handler(r.model)(r.command, loaded.state)
            except Exception as exc:
                logic_failed(r.command, exc)
                raise
            if not decided:
                return None
            expected = NO_STREAM if loaded.version is None else loaded.version
            typed = r.model.typed_events  # registered classes (the common case): encoded now
            prepared = self._encodings.prepared(r, decided, self.store) if typed else None
            if prepared is not None:
                events, request = decided, _new(AppendRequest, (r.stream, prepared, expected))
            else:
                events, request = await decisions.request(
                    self.registry, self.store, r, decided, expected
                )
                decided = decisions.evolvable(
                    typed, r.stream, loaded.version, events, request.events
                )
            try:
                state = self.repository.settle(r.model, loaded.state, decided)
            except Exception as exc:
                logic_failed(r.command, exc)
                raise
        except BaseException:
            self.repository.forget(r.stream)
            raise
        return Decision(events, request, state)

    async def _made_before(
        self, r: Routed, decision: Decision, result: AppendResult, lazy: bool
    ) -> CommandResult:
        """The result of an append the store found made earlier, on another version."""
        self.repository.forget(r.stream)
        if lazy and (previous := await self._previous(r)) is not None:
            return previous  # all of the earlier dispatch's events
        recorded = await decisions.recorded(self.store, decision.request, result)
        return CommandResult(r.command_id, r.stream, recorded, result.last_sequence, duplicate=True)

    def _appended(
        self,
        r: Routed,
        loaded: Loaded,
        decision: Decision,
        result: AppendResult,
        recorded: list[RecordedEvent],
        hit: bool,
    ) -> CommandResult:
        """The result of our append: the new state kept (cached already when ``hit``)."""
        loaded.state, loaded.version = decision.state, result.last_sequence
        if not loaded.personal and self.registry.keys is not None:
            loaded.personal = self.repository.carries_personal(decision.request.events)
        if not hit:
            self.repository.remember(r.model, r.stream, loaded)
        self.repository.maybe_snapshot(r.model, r.stream, loaded)
        if r.known_id:
            ids = self._appended_ids
            ids[r.command_id] = None
            if len(ids) > RECENT_IDS:
                ids.popitem(last=False)
        return CommandResult(r.command_id, r.stream, recorded, result.last_sequence)

    async def _previous(self, r: Routed) -> CommandResult | None:
        """Step 3: the result of an earlier dispatch of the command's id, if it appended events."""
        events = await decisions.earlier(self.store, r.stream, r.command_id, r.first)
        if events is None:
            return None
        return CommandResult(r.command_id, r.stream, events, events[-1].sequence, duplicate=True)

    async def _previous_or(self, r: Routed, exc: Exception) -> CommandResult:
        """The earlier result of the command's id, else ``exc`` raised."""
        previous = await self._previous(r)
        if previous is None:
            raise exc
        return previous

    async def close(self) -> None:
        """Wait for background snapshot writes."""
        await self.repository.drain()
