"""Given / then for projections: prior events in, the read model's rows out.

    projection_fixture(summary(), registry=registry).given(
        CustomerCreated("Ada", "ada@x"), stream=StreamId("customer", "c1")
    ).then_rows("customer_summary", [{"id": "c1", "name": "Ada"}])

The projection runs as in production: its events are appended to a memory store and a real
``ProjectionProcessor`` applies them, committing its rows with its checkpoint. A handler that
raises fails the step at once (an AssertionError naming the error) instead of being retried.
Fixtures are synchronous (each step runs the fixture's own event loop, on a helper thread when
called from inside a running loop), so they fit plain ``def`` tests and async ones alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import weakref
from collections.abc import Coroutine, Iterable
from typing import Any, Self, TypeVar

import msgspec

from chronik.codec import EventRegistry
from chronik.errors import ChronikError, ProjectionStopped, ValidationError
from chronik.messages import EventData, StreamId
from chronik.projections import Projection, ProjectionProcessor, query
from chronik.projections.projection import ErrorPolicy
from chronik.store.memory import MemoryEventStore

__all__ = ["DEFAULT_STREAM", "ProjectionFixture", "projection_fixture"]

T = TypeVar("T")
DEFAULT_STREAM = StreamId("test", "test-1")
STEP_TIMEOUT = 10.0  # seconds one step may take before the fixture gives up


def projection_fixture(
    projection: Projection, *, registry: EventRegistry | None = None
) -> ProjectionFixture:
    """A fixture that runs ``projection`` on the events given to it (``registry``: to give
    registered event instances rather than EventData)."""
    return ProjectionFixture(projection, registry=registry)


class _Harness:
    """A memory store, an event loop of its own and the processors of one fixture."""

    def __init__(self, registry: EventRegistry | None) -> None:
        self.registry = registry
        self.store = MemoryEventStore("memory://")
        self.loop = asyncio.new_event_loop()
        self.projections: list[Projection] = []
        weakref.finalize(self, self.loop.close)

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        """Run ``step`` to completion on the fixture's loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.loop.run_until_complete(step)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code
            return pool.submit(self.loop.run_until_complete, step).result()

    def add(self, projection: Projection) -> None:
        """Run ``projection`` too, failing fast: a handler error stops it, not retried."""
        projection.policy = ErrorPolicy(retries=0, then="stop")
        self.projections.append(projection)

    def event_data(self, event: Any) -> EventData:
        """``event`` as an EventData: as it is, or a registered instance encoded."""
        if isinstance(event, EventData):
            return event
        if self.registry is None:
            raise ValidationError(
                f"give {type(event).__qualname__} as chronik.EventData, or pass registry=",
                field="events",
            )
        return self.registry.to_event_data(event)

    async def append(self, events: Iterable[Any], stream: StreamId | tuple[str, str]) -> int:
        """Append ``events`` to ``stream``, let every projection apply them; returns the time
        the store recorded them (microseconds; 0 when there were none)."""
        if isinstance(stream, tuple):
            stream = StreamId(*stream)
        data = [self.event_data(e) for e in events]
        await self.store.open()
        recorded = 0
        if data:
            recorded = (await self.store.append(stream, data)).recorded_at_us
        await self.settle()
        return recorded

    async def settle(self) -> None:
        """Let every projection apply every stored event (a processor per step, resuming from
        its checkpoint, stopped after); AssertionError naming the handler's error if one
        failed."""
        await self.store.open()
        head = await self.store.head()
        for projection in self.projections:
            proc = ProjectionProcessor(self.store, projection, heartbeat=0.05)
            try:
                await proc.start()
                if head is not None:
                    async with asyncio.timeout(STEP_TIMEOUT):
                        await proc.wait_for(head)
            except (ProjectionStopped, TimeoutError) as exc:
                error = proc.last_error or repr(exc)
                raise AssertionError(f"{projection.name} failed: {error}") from None
            finally:
                await proc.stop(1.0)

    async def rows(self, projection: str, table: str) -> list[dict[str, Any]]:
        """The committed rows of a projection's table."""
        await self.store.open()
        try:
            return await query(self.store, projection, table)
        except ChronikError as exc:
            raise AssertionError(f"no rows of {projection}.{table}: {exc}") from None


def _key(row: dict[str, Any]) -> bytes:
    return msgspec.json.encode(row, order="sorted")


class ProjectionFixture:
    """Prior events for one projection; ``then_rows`` checks the tables it wrote."""

    def __init__(self, projection: Projection, *, registry: EventRegistry | None = None) -> None:
        self.projection = projection
        self._harness = _Harness(registry)
        self._harness.add(projection)

    @property
    def store(self) -> MemoryEventStore:
        """The memory store the projection runs against."""
        return self._harness.store

    def given(self, *events: Any, stream: StreamId | tuple[str, str] = DEFAULT_STREAM) -> Self:
        """Append ``events`` (EventData, or instances of registered classes) to ``stream`` and
        apply them; call it again for other streams."""
        self._harness.run(self._harness.append(events, stream))
        return self

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` now."""
        return self._harness.run(self._harness.rows(self.projection.name, table))

    def then_rows(self, table: str, expected: list[dict[str, Any]]) -> Self:
        """Assert ``table`` holds exactly the ``expected`` rows (in any order)."""
        rows = self.rows(table)
        if sorted(map(_key, rows)) != sorted(map(_key, expected)):
            raise AssertionError(f"expected rows of {table} {expected}, got {rows}")
        return self
