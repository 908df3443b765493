"""Catch-up then live delivery of the global event order, from a Position, with filters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Self

from chronik.errors import StoreUnavailable
from chronik.messages import Position, RecordedEvent
from chronik.store.tenant_reads import check_tenant_filter

if TYPE_CHECKING:
    from chronik.dcb import Query
    from chronik.store.base import EventStore

__all__ = ["Subscription"]

# A subscription re-reads at least this often even if no change was signalled (a safety net for
# notifications an adapter could not see).
FALLBACK_POLL_SECONDS = 1.0
# While the store is unreachable (a database restart, a failover) a subscription that has read
# from it before retries with backoff for this long before the error reaches the caller; it
# resumes from its position, so nothing is delivered twice.
RECONNECT_SECONDS = 60.0


class Subscription:
    """An async iterator over every event after a position: stored ones first, then live ones.

    Each event is delivered once, in commit order. ``position`` is the last delivered event's
    position (resume from it later); ``caught_up`` turns true once the stored events are
    exhausted (and, on stores where transactions commit out of order, no committed event is
    held back behind a transaction that is still running). Close it (or leave its
    ``async with`` block) to stop.
    """

    def __init__(
        self,
        store: EventStore,
        after: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        batch_size: int = 500,
        query: Query | None = None,
        tenant: str | None = None,
    ) -> None:
        check_tenant_filter(tenant)
        self._store = store
        self._tenant = tenant
        self.position = after
        self._domains = domains
        self._query = query
        if query is not None:  # read only the query's types when it names them all
            qtypes = query.types()
            if qtypes is not None:
                types = qtypes if types is None else tuple(t for t in types if t in qtypes)
        self._types = types
        self._batch_size = batch_size
        self._buffer: deque[RecordedEvent] = deque()
        self._closed = False
        self._scanned: Position | None = None  # a filtered read found nothing more up to here
        self._read_once = False  # outages are waited out once the store has answered
        self.caught_up = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent:
        buffer = self._buffer
        while not buffer:
            await self._fill()
        event = buffer.popleft()
        self.position = event.position
        return event

    async def _fill(self) -> None:
        store = self._store
        outage: float | None = None
        attempt = 0
        while True:
            if self._closed or store.closed:
                raise StopAsyncIteration
            signal = store.change_signal()
            try:
                after = self.position
                if self._scanned is not None and (after is None or self._scanned > after):
                    after = self._scanned
                page = await store.read_page(
                    after, self._batch_size, self._domains, self._types, self._tenant
                )
                if page.scanned is not None:
                    # nothing else of ours up to there: later reads start there instead of
                    # rescanning the unwanted events after the last delivered one
                    self._scanned = page.scanned
                settled = True if page.events else await store.settled(self.position)
            except StoreUnavailable:
                now = time.monotonic()
                outage = now if outage is None else outage
                if not self._read_once or now - outage > RECONNECT_SECONDS or self._closed:
                    raise
                delay = min(2.0, 0.05 * 2**attempt)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signal.wait(), delay)
                continue
            outage, attempt = None, 0
            self._read_once = True
            events = page.events
            if events and self._query is not None:
                # the events the query skips are passed: later reads start after them
                matches = self._query.matches
                last = events[-1].position
                events = [e for e in events if matches(e)]
                if not events:
                    self.position = last
                    continue
            if events:
                self._buffer.extend(events)
                return
            self.caught_up = settled
            with store.watching(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), FALLBACK_POLL_SECONDS)

    async def close(self) -> None:
        """Stop the subscription; a pending ``__anext__`` ends with StopAsyncIteration."""
        self._closed = True
        self._buffer.clear()
        self._store.wake_readers()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("live" if self.caught_up else "catching up")
        return f"<Subscription after={self.position} {state}>"
