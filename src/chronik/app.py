"""The embedded facade: one store, one event registry, the command bus and its domains."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from chronik.aggregate import Aggregate, AggregateModel, Decider, DomainModel, Snapshots
from chronik.codec import EventRegistry
from chronik.commands import (
    CommandBus,
    CommandResult,
    DispatchMiddleware,
    HandlerMiddleware,
    OutboxRule,
    RetryPolicy,
)
from chronik.deadline_events import INTERNAL_EVENTS
from chronik.errors import ConfigurationError
from chronik.health import Supervisor
from chronik.messages import Command, Position, StreamId

if TYPE_CHECKING:
    from chronik.projections import Projection, ProjectionRunner
from chronik.store import open_store
from chronik.store.base import EventStore

__all__ = ["Chronik"]


class Chronik:
    """chronik in one process: ``async with Chronik(store=URL) as app: await app.dispatch(...)``.

    ``store`` is a URL (``memory://``, ``sqlite:///path.db``, ``postgresql://...``) or an
    EventStore; ``registry`` allows the event classes the business logic emits.
    """

    def __init__(
        self,
        store: str | EventStore = "sqlite:///data/events.db",
        *,
        registry: EventRegistry | None = None,
        retry: RetryPolicy | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.registry = registry if registry is not None else EventRegistry()
        for cls, name in INTERNAL_EVENTS.items():  # deadlines that aggregates schedule
            if name not in self.registry:
                self.registry.register(cls, name)
        self.bus = CommandBus(self.store, self.registry, retry=retry, cache_size=cache_size)
        self._projections: list[Projection] = []
        self.runner: ProjectionRunner | None = None
        #: every background task the app (and ``chronik serve``) runs, and the loop lag
        self.health = Supervisor()

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
    ) -> Decider:
        """Handle ``domain`` with decide/evolve functions (see ``chronik.Decider``)."""
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
        self.bus.register(decider)
        return decider

    def add_aggregate(self, cls: type[Aggregate]) -> type[Aggregate]:
        """Handle ``cls.domain`` with an Aggregate class."""
        self.bus.register(AggregateModel(cls))
        return cls

    def add_model(self, model: DomainModel) -> DomainModel:
        """Handle ``model.domain`` with any DomainModel (e.g. one made elsewhere)."""
        return self.bus.register(model)

    def add_outbox(self, rule: OutboxRule) -> None:
        """Record integration messages with the events that cause them (see CommandBus)."""
        self.bus.add_outbox(rule)

    def add_projection(self, projection: Projection) -> Projection:
        """Run ``projection`` (or a saga's) with the app: it starts when the app opens."""
        if self.runner is not None:
            raise ConfigurationError("add projections before the app is opened")
        self._projections.append(projection)
        return projection

    async def wait_for(self, position: Position | None) -> None:
        """Return once every projection of the app has applied all events up to ``position``
        (read-your-writes); bound it with ``asyncio.timeout``."""
        if position is None:
            return
        if self.runner is None:
            raise ConfigurationError("the app has no running projections to wait for")
        await self.runner.wait_for(position)

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
        """Open the store and start the projections (in the background: see ``health``)."""
        await self.store.open()
        self.health.start()
        if self._projections and self.runner is None:
            from chronik.projections import ProjectionRunner

            self.runner = ProjectionRunner(self.store, self._projections, health=self.health)
            await self.runner.start()
        return self

    async def close(self, grace: float = 10.0) -> None:
        """Stop the projections (a batch still running after ``grace`` s is cancelled), finish
        background snapshot writes, stop the background tasks, close the store."""
        if self.runner is not None:
            await self.runner.stop(grace)
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
