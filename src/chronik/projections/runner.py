"""Several projections run together against one store, with one ``wait_for``.

``start()`` returns at once: each processor (or partition worker) sets up and catches up in a
background task registered with the runner's ``health`` supervisor, which retries a start-up
that failed (the store is down) with backoff and restarts a loop that crashed, so no
projection, however broken, holds up the server that runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

from chronik.errors import ConfigurationError, StoreClosed, UnknownProjection
from chronik.health import Supervisor
from chronik.messages import Position
from chronik.projections.processor import ProjectionProcessor
from chronik.projections.projection import Projection
from chronik.projections.workers import PartitionWorker
from chronik.store.base import EventStore

__all__ = ["ProjectionRunner"]


class ProjectionRunner:
    """Runs projections; ``async with ProjectionRunner(store, [...])``.

    Each projection gets a processor (``processors``), or, when it is partitioned, a
    PartitionWorker (``workers``) that takes its share of the partitions.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Iterable[Projection],
        *,
        heartbeat: float = 1.0,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        health: Supervisor | None = None,
        stuck_after: float = 60.0,
    ) -> None:
        self.store = store
        #: where the processors' tasks are registered (the app's, or the runner's own)
        self.health = health if health is not None else Supervisor()
        self.stuck_after = stuck_after  # a page running longer than this is reported stuck
        self.processors: dict[str, ProjectionProcessor] = {}
        self.workers: dict[str, PartitionWorker] = {}
        tables: dict[str, str] = {}
        for p in projections:
            if p.name in self.processors or p.name in self.workers:
                raise ConfigurationError(f"projection {p.name!r} is registered twice")
            for t in p.tables:
                if t in tables:
                    raise ConfigurationError(
                        f"table {t!r} is declared by both {tables[t]!r} and {p.name!r}"
                    )
                tables[t] = p.name
            if p.partitions > 1:
                self.workers[p.name] = PartitionWorker(
                    store, p, heartbeat=heartbeat, owner=owner, lease_ttl=lease_ttl
                )
            else:
                self.processors[p.name] = ProjectionProcessor(
                    store, p, heartbeat=heartbeat, owner=owner, lease_ttl=lease_ttl
                )
        self._started = False

    def __getitem__(self, name: str) -> ProjectionProcessor:
        try:
            return self.processors[name]
        except KeyError:
            raise UnknownProjection(name, sorted([*self.processors, *self.workers])) from None

    async def start(self) -> None:
        """Start every processor in the background (see the module docstring)."""
        if not self._started:
            self._started = True
            self.health.add_check(f"projections {id(self):x}", self.problems)
            for name, proc in self.processors.items():
                self.health.supervise(f"projection {name}", self._keep(proc))
            for name, worker in self.workers.items():
                self.health.supervise(f"projection {name}", self._keep(worker))

    def _keep(self, proc: ProjectionProcessor | PartitionWorker) -> Callable[[], Awaitable[None]]:
        async def keep() -> None:
            try:
                await proc.start()
                await proc.join()
            except StoreClosed:
                return

        return keep

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every processor (each finishes its batch, within ``grace`` s: a handler that
        never returns is cancelled then)."""
        for name in [*self.processors, *self.workers]:
            self.health.stopping(f"projection {name}")
        stops = [
            *(p.stop(grace) for p in self.processors.values()),
            *(w.stop(grace) for w in self.workers.values()),
        ]
        tasks = [asyncio.ensure_future(s) for s in stops]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for name in [*self.processors, *self.workers]:
            info = self.health.tasks.get(f"projection {name}")
            if info is not None and info.task is not None and not info.task.done():
                info.task.cancel()
        self.health.remove_check(f"projections {id(self):x}")
        self._started = False

    def problems(self) -> list[str]:
        """What is wrong with the projections this process runs (readiness)."""
        out: list[str] = []
        procs = [
            *self.processors.values(),
            *(p for w in self.workers.values() for p in w.processors if p.epoch is not None),
        ]
        for proc in procs:
            if proc.state in ("failing", "stopped"):
                out.append(f"projection {proc.key}: {proc.state} ({proc.last_error})")
            elif proc.busy_for > self.stuck_after:
                out.append(
                    f"projection {proc.key}: stuck for {proc.busy_for:.0f} s on one page"
                    + (f" ({proc.last_error})" if proc.last_error else "")
                )
        return out

    async def wait_for(self, position: Position) -> None:
        """Return once every projection has applied every event up to ``position``.

        Bound the wait with ``asyncio.timeout``; ProjectionStopped if one stops first.
        """
        for proc in self.processors.values():
            await proc.wait_for(position)
        for worker in self.workers.values():
            await worker.wait_for(position)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        shown = [*map(repr, self.processors.values()), *map(repr, self.workers.values())]
        return f"<ProjectionRunner {', '.join(shown)}>"
