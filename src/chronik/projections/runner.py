"""Several projections run together against one store, with one ``wait_for``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from chronik.errors import ConfigurationError, UnknownProjection
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
    ) -> None:
        self.store = store
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
        """Start every processor."""
        if not self._started:
            self._started = True
            for proc in self.processors.values():
                await proc.start()
            for worker in self.workers.values():
                await worker.start()

    async def stop(self) -> None:
        """Stop every processor (each finishes its batch)."""
        await asyncio.gather(
            *(p.stop() for p in self.processors.values()),
            *(w.stop() for w in self.workers.values()),
        )
        self._started = False

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
