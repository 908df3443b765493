"""The embedded facade: one store, one event registry, the command bus and its domains.

Inside ``async with app`` the app runs what it was given, as ``chronik serve`` does: its
projections and sagas, the deadline scheduler, and the outbox dispatcher when it has a
transport, each a task of ``app.health``; leaving the block stops them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from chronik.aggregate import Aggregate, AggregateModel
from chronik.aggregate_locks import DurableLock
from chronik.codec import EventRegistry
from chronik.commands import (
    CommandBus,
    CommandResult,
    DispatchMiddleware,
    HandlerMiddleware,
    RetryPolicy,
)
from chronik.decider import Decider
from chronik.domain_model import DomainModel, Snapshots
from chronik.emitter import CommittedHandler, Handler, Matcher, parse_matcher
from chronik.errors import ConfigurationError
from chronik.health import Supervisor
from chronik.messages import Command, Position, StreamId
from chronik.outbox_rules import OutboxRule

if TYPE_CHECKING:
    from chronik.aggregate_lock_sweep import LockSweeper
    from chronik.deadlines import Clock, DeadlineScheduler
    from chronik.outbox import OutboxDispatcher
    from chronik.projections import Projection, ProjectionRunner
    from chronik.sagas import Saga
    from chronik.transports.base import Transport
from chronik.store import open_store
from chronik.store.base import EventStore

__all__ = ["Chronik"]

log = logging.getLogger("chronik.app")


class Chronik:
    """chronik in one process: ``async with Chronik(store=URL) as app: await app.dispatch(...)``.

    ``store`` is a URL (``memory://``, ``sqlite:///path.db``, ``postgresql://...``) or an
    EventStore; ``registry`` allows the event classes the business logic emits.

    Inside ``async with app`` (or between ``open()`` and ``close()``) the app runs what it was
    given, as ``chronik serve`` does, one switch per part:

    - ``run_projections`` (default True): the projections and sagas added with
      ``add_projection`` / ``add_saga``. False: they are only registered (another process
      runs them).
    - ``run_deadlines`` (default None: when the app has a saga): the deadline scheduler, which
      fires the due deadlines of the app's sagas and of aggregates (``Aggregate.schedule``),
      and the ``chronik_deadlines`` projection that keeps the aggregates' deadlines. True: also
      without a saga (aggregates that schedule); False: never (another process fires them).
    - ``outbox_transport`` (default None): a transport URL (``memory://``, ``nats://...``) or
      a Transport; with one, the outbox dispatcher publishes the messages that outbox rules
      recorded. A URL is opened and closed by the app; a Transport given is opened, and
      left open for its owner to close.
    - ``clock``: where sagas and the deadline scheduler take "now" from (tests pass a
      ``chronik.deadlines.ManualClock`` and ``advance`` it).

    Each part is a task of ``health`` (a crash restarts it with backoff); leaving the block
    stops them all, a step still running after ``close``'s grace period is cancelled.
    """

    def __init__(
        self,
        store: str | EventStore = "sqlite:///data/events.db",
        *,
        registry: EventRegistry | None = None,
        retry: RetryPolicy | None = None,
        cache_size: int = 10_000,
        run_projections: bool = True,
        run_deadlines: bool | None = None,
        outbox_transport: Transport | str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.registry = registry if registry is not None else EventRegistry()
        self.bus = CommandBus(self.store, self.registry, retry=retry, cache_size=cache_size)
        self._projections: list[Projection] = []
        self.runner: ProjectionRunner | None = None
        self.run_projections = run_projections
        self.run_deadlines = run_deadlines
        self.outbox_transport = outbox_transport
        self.clock = clock
        #: the sagas added with ``add_saga``
        self.sagas: list[Saga[Any]] = []
        #: the running deadline scheduler and outbox dispatcher (None when not running)
        self.scheduler: DeadlineScheduler | None = None
        self.outbox: OutboxDispatcher | None = None
        self._transport: Transport | None = None
        #: the sweeper of ended durable aggregate locks, while running (any domain with a lock)
        self.lock_sweeper: LockSweeper | None = None
        self._stops: list[Callable[[], Awaitable[None]]] = []
        #: every background task the app (and ``chronik serve``) runs, and the loop lag
        self.health = Supervisor()
        self._opened = False

    # --- business logic -----------------------------------------------------------------------

    def add_decider(
        self,
        domain: str,
        decide: Callable[[Command, Any], Any],
        evolve: Callable[[Any, Any], Any],
        initial: Callable[[], Any] = dict,
        *,
        commands: Mapping[str, type[Any] | None] | None = None,
        snapshots: Snapshots | None = None,
        state_type: Any = None,
        state_version: int = 1,
        lock: DurableLock | None = None,
    ) -> Decider:
        """Handle ``domain`` with decide/evolve functions (see ``chronik.Decider``);
        ``lock``: a durable per-aggregate lock around each command (``chronik.DurableLock``)."""
        decider = Decider(
            domain,
            decide,
            evolve,
            initial,
            commands=commands,
            snapshots=snapshots,
            state_type=state_type,
            state_version=state_version,
        )
        self.bus.register(decider, lock=lock)
        return decider

    def add_aggregate(
        self, cls: type[Aggregate], *, lock: DurableLock | None = None
    ) -> type[Aggregate]:
        """Handle ``cls.domain`` with an Aggregate class; ``lock``: a durable per-aggregate
        lock around each command (``chronik.DurableLock``)."""
        self.bus.register(AggregateModel(cls), lock=lock)
        return cls

    def add_model(self, model: DomainModel, *, lock: DurableLock | None = None) -> DomainModel:
        """Handle ``model.domain`` with any DomainModel (e.g. one made elsewhere); ``lock``:
        a durable per-aggregate lock around each command (``chronik.DurableLock``)."""
        return self.bus.register(model, lock=lock)

    def add_outbox(self, rule: OutboxRule) -> None:
        """Record integration messages with the events that cause them (see CommandBus)."""
        self.bus.add_outbox(rule)

    def add_projection(self, projection: Projection) -> Projection:
        """Run ``projection`` (or a saga's) with the app: it starts when the app opens."""
        if self.runner is not None or self._stops:
            raise ConfigurationError("add projections before the app is opened")
        self._projections.append(projection)
        return projection

    def add_saga(self, saga: Saga[Any]) -> Saga[Any]:
        """Run ``saga`` with the app: its commands go through ``dispatch``, and its deadlines
        fire by the app's deadline scheduler (see ``run_deadlines``)."""
        self.add_projection(saga.projection(self.dispatch, clock=self.clock))
        self.sagas.append(saga)
        return saga

    async def wait_for(self, position: Position | None) -> None:
        """Return once every projection of the app has applied all events up to ``position``
        (read-your-writes); bound it with ``asyncio.timeout``."""
        if position is None:
            return
        if self.runner is None:
            raise ConfigurationError("the app has no running projections to wait for")
        await self.runner.wait_for(position)

    @overload
    def on_committed(self, type_or_predicate: Matcher) -> Callable[[Handler], CommittedHandler]: ...

    @overload
    def on_committed(self, type_or_predicate: Matcher, handler: Handler) -> CommittedHandler: ...

    def on_committed(
        self, type_or_predicate: Matcher, handler: Handler | None = None
    ) -> CommittedHandler | Callable[[Handler], CommittedHandler]:
        """Run ``handler(event)`` after each command's unit of work committed, for the events
        ``type_or_predicate`` matches (a type name, a collection of them, or ``(event) ->
        bool``); never for a command that was rejected, raised or rolled back. Returns a
        ``CommittedHandler`` (``.remove()`` unregisters it); without ``handler``, a decorator.

        Handlers run in a task of the app while it is open, after ``dispatch`` returned, one
        event at a time: a stream's events in the order they were stored, other commands' in
        the order their appends returned. At most once, in this process: a crash,
        a full queue or ``close``'s grace running out loses queued events (see
        ``chronik.emitter``); use a projection for effects that must happen.
        """
        if handler is None:
            parse_matcher(type_or_predicate)  # bad input fails here, not at decoration
            return lambda fn: self._on_committed(type_or_predicate, fn)
        return self._on_committed(type_or_predicate, handler)

    def _on_committed(self, type_or_predicate: Matcher, handler: Handler) -> CommittedHandler:
        registered = self.bus.emitter.add(type_or_predicate, handler)
        if self._opened:
            self.bus.emitter.start(self.health)
        return registered

    def use(self, middleware: DispatchMiddleware) -> None:
        """Wrap every dispatch (logging, auth, tracing): ``async def mw(command, call_next)``."""
        self.bus.use(middleware)

    def use_handler(self, middleware: HandlerMiddleware) -> None:
        """Wrap every business-logic call: ``async def mw(command, state, call_next)``."""
        self.bus.use_handler(middleware)

    # --- use ----------------------------------------------------------------------------------

    async def dispatch(self, command: Command) -> CommandResult:
        """Handle one command: load, decide, append (retrying on conflict); idempotent by id."""
        await self.store.open()
        return await self.bus.dispatch(command)

    async def load(self, domain: str, aggregate_id: str, tenant: str = "") -> Any:
        """The current state of one aggregate, read from the store (snapshot + tail)."""
        await self.store.open()
        model = self.bus.model(domain)
        loaded = await self.bus.repository.load(
            model, StreamId(domain, aggregate_id, tenant), use_cache=False
        )
        return loaded.state

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the store and start what the app runs (in the background: see ``health``)."""
        await self.store.open()
        self.health.start()
        self._opened = True
        if self.bus.emitter.handlers:
            self.bus.emitter.start(self.health)
        if self.runner is not None or self._stops:
            return self  # already open
        try:
            await self._start()
        except BaseException:
            await self._stop_parts(5.0)
            raise
        return self

    async def _start(self) -> None:
        from chronik.deadlines import DeadlineScheduler, aggregate_deadlines
        from chronik.projections import ProjectionRunner

        projections = list(self._projections) if self.run_projections else []
        sagas = self._all_sagas()
        deadlines = self.run_deadlines if self.run_deadlines is not None else bool(sagas)
        if deadlines:
            projections.append(aggregate_deadlines(self.dispatch))
        if projections:
            self.runner = ProjectionRunner(self.store, projections, health=self.health)
            await self.runner.start()
        if deadlines:
            self.scheduler = DeadlineScheduler(self.store, sagas, clock=self.clock)
            self.health.supervise("deadline scheduler", self.scheduler.run)
            self._stops.append(self._stop_scheduler)
        if self.outbox_transport is not None:
            await self._start_outbox(self.outbox_transport)
        if self.bus.locks.policies:
            self._start_lock_sweeper()

    def _start_lock_sweeper(self) -> None:
        from chronik.aggregate_lock_sweep import LockSweeper

        self.lock_sweeper = LockSweeper(self.store)
        self.health.supervise("aggregate lock sweeper", self.lock_sweeper.run, vital=False)
        self._stops.append(self._stop_lock_sweeper)

    async def _stop_lock_sweeper(self) -> None:
        await self.health.stop_task("aggregate lock sweeper")
        self.lock_sweeper = None

    async def _start_outbox(self, given: Transport | str) -> None:
        from chronik.outbox import OutboxDispatcher

        if isinstance(given, str):
            from chronik.transports import open_transport

            transport = open_transport(given)
            self._transport = transport  # the app's own: closed with it
        else:
            transport = given
        self._stops.append(self._stop_outbox)
        await transport.open()
        self.outbox = OutboxDispatcher(self.store, transport)
        self.health.supervise("outbox dispatcher", self.outbox.run)

    def _all_sagas(self) -> list[Saga[Any]]:
        """The sagas added with add_saga, and those whose projection was added."""
        from chronik.sagas import Saga

        found = list(self.sagas)
        for projection in self._projections:
            saga = getattr(projection, "saga", None)
            if isinstance(saga, Saga) and saga not in found:
                found.append(saga)
        return found

    async def _stop_scheduler(self) -> None:
        await self.health.stop_task("deadline scheduler")
        self.scheduler = None

    async def _stop_outbox(self) -> None:
        await self.health.stop_task("outbox dispatcher")
        dispatcher, self.outbox = self.outbox, None
        if dispatcher is not None:
            await dispatcher.stop()  # gives the lease up
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    async def _stop_parts(self, grace: float) -> None:
        stops, self._stops = self._stops, []
        for stop in reversed(stops):
            try:
                await asyncio.wait_for(stop(), grace)
            except Exception as exc:  # never let one part hold the shutdown
                log.warning("%s did not stop cleanly: %r", stop.__name__, exc)
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.stop(grace)

    async def close(self, grace: float = 10.0) -> None:
        """Stop the outbox dispatcher, the deadline scheduler and the projections (a step
        still running after ``grace`` s is cancelled), finish background snapshot writes, stop
        the background tasks, close the store. The ``on_committed`` handlers get what is
        queued for them within ``grace`` s too, after the parts stopped."""
        await self._stop_parts(grace)
        self._opened = False
        await self.bus.emitter.stop(grace)
        await self.bus.close()
        await self.health.stop()
        await self.store.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Chronik {self.store!r} domains={self.bus.domains}>"
