"""Prometheus metrics of one server: commands by outcome, dispatch latency, projection lag."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from chronik.commands import CommandResult
from chronik.errors import ChronikError, ReadModelError
from chronik.health import STATES, Supervisor, horizon_lag
from chronik.messages import Command
from chronik.server.routing import RoutingCollector

if TYPE_CHECKING:
    from chronik.app import Chronik
    from chronik.projections import ProjectionAdmin
    from chronik.server.limits import Limiter
    from chronik.store.base import EventStore

__all__ = ["Metrics"]


class Metrics:
    """The server's metrics in their own registry (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "chronik_commands",
            "Commands handled, by domain and outcome",
            ["domain", "outcome"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "chronik_command_seconds",
            "Command handling time (load, decide, append)",
            ["domain"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.events_appended = Counter(
            "chronik_events_appended", "Events appended by commands", ["domain"], registry=r
        )
        self.appends = Counter(
            "chronik_appends", "Units of work committed with appends", registry=r
        )
        self.append_seconds = Histogram(
            "chronik_append_seconds",
            "Time to commit a unit of work with appends",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.outbox_pending = Gauge(
            "chronik_outbox_pending", "Outbox messages waiting to be published", registry=r
        )
        self.http_subscriptions = 0
        self.grpc_subscriptions: Callable[[], int] | None = None  # set by chronik serve
        self.subscriptions = Gauge(
            "chronik_subscriptions", "Open event subscriptions (HTTP SSE and gRPC)", registry=r
        )
        self.subscriptions.set_function(
            lambda: (
                self.http_subscriptions
                + (self.grpc_subscriptions() if self.grpc_subscriptions else 0)
            )
        )
        self.head = Gauge("chronik_head_position", "The store's head position", registry=r)
        self.lag_events = Gauge(
            "chronik_projection_lag_events",
            "Events a projection is behind",
            ["projection"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "chronik_projection_lag_seconds",
            "How old the oldest unprocessed event is",
            ["projection"],
            registry=r,
        )
        self.rate = Gauge(
            "chronik_projection_events_per_second",
            "Projection throughput",
            ["projection"],
            registry=r,
        )
        self.task_state = Gauge(
            "chronik_task_state",
            "Background tasks: 1 for the state each is in (running, restarting, dead, stopped)",
            ["task", "state"],
            registry=r,
        )
        self.store_healthy = Gauge(
            "chronik_store_healthy", "1 while the store's writer works, else 0", registry=r
        )
        self.loop_lag = Gauge(
            "chronik_event_loop_lag_seconds",
            "How late the event loop is (worst within the last seconds)",
            registry=r,
        )
        self.horizon_pending = Gauge(
            "chronik_store_horizon_pending_events",
            "Committed events readers wait for because an older transaction still runs",
            registry=r,
        )
        self.refused = Counter(
            "chronik_refused_requests",
            "Requests refused at a limit (429 / RESOURCE_EXHAUSTED), by API and limit",
            ["api", "limit"],
            registry=r,
        )
        self.inflight_commands = Gauge(
            "chronik_inflight_commands", "Commands being handled now (limited)", registry=r
        )
        self._instrumented: set[int] = set()
        self._limiters: set[int] = set()

    def instrument(self, app: Chronik) -> None:
        """Count and time every command the app dispatches (once per app)."""
        if id(app) in self._instrumented:
            return
        self._instrumented.add(id(app))

        async def measure(command: Command, call_next: Any) -> CommandResult:
            start = time.perf_counter()
            outcome = "ok"
            try:
                result: CommandResult = await call_next(command)
                if result.duplicate:
                    outcome = "duplicate"
                self.events_appended.labels(command.domain).inc(len(result.events))
                return result
            except ChronikError as exc:
                outcome = type(exc).__name__
                raise
            except Exception:
                outcome = "error"
                raise
            finally:
                self.commands.labels(command.domain, outcome).inc()
                self.command_seconds.labels(command.domain).observe(time.perf_counter() - start)

        app.use(measure)

        def appended(appends: list[Any], seconds: float) -> None:
            if appends:
                self.appends.inc()
                self.append_seconds.observe(seconds)

        app.store.write_observers.append(appended)
        self.registry.register(RoutingCollector(app))  # chronik_routing_*: forwarded, fallbacks

    def watch_limits(self, limiter: Limiter) -> None:
        """Count the refusals of ``limiter`` (of both servers) and show its in-flight commands."""
        if id(limiter) in self._limiters:
            return
        self._limiters.add(id(limiter))
        limiter.observers.append(lambda api, exc: self.refused.labels(api, exc.limit).inc())
        self.inflight_commands.set_function(lambda: limiter.inflight_commands)

    async def refresh(self, store: EventStore, admin: ProjectionAdmin | None) -> None:
        """Read the gauges that come from the database (called at scrape time)."""
        head = await store.head()
        self.head.set(0 if head is None else head.commit)
        if store.supports_tables:
            try:
                pending = await store.read_table("outbox_messages", {"state": "pending"})
            except ReadModelError:  # no outbox in this store
                pending = []
            self.outbox_pending.set(len(pending))
        if admin is not None:
            lag = await horizon_lag(store)
            self.horizon_pending.set(0 if lag is None else lag.pending_events)
            for s in await admin.statuses():
                self.lag_events.labels(s.name).set(s.lag_events)
                self.lag_seconds.labels(s.name).set(s.lag_seconds)
                self.rate.labels(s.name).set(s.events_per_s)

    def refresh_health(self, supervisors: Sequence[Supervisor], store: EventStore) -> None:
        """Set the task-state, store-health and loop-lag gauges (at scrape time)."""
        for supervisor in supervisors:
            for info in supervisor.tasks.values():
                for state in STATES:
                    self.task_state.labels(info.name, state).set(int(info.state == state))
        self.store_healthy.set(int(store.health.ok))
        self.loop_lag.set(max((s.loop_lag for s in supervisors), default=0.0))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
