"""Catch-up then live delivery of the global event order, from a Position, with filters."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Self

from chronik.messages import Position, RecordedEvent

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["Subscription"]

# A subscription re-reads at least this often even if no change was signalled (a safety net for
# notifications an adapter could not see).
FALLBACK_POLL_SECONDS = 1.0


class Subscription:
    """An async iterator over every event after a position: stored ones first, then live ones.

    Each event is delivered once, in commit order. ``position`` is the last delivered event's
    position (resume from it later); ``caught_up`` turns true once the stored events are
    exhausted. Close it (or leave its ``async with`` block) to stop.
    """

    def __init__(
        self,
        store: EventStore,
        after: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        batch_size: int = 500,
    ) -> None:
        self._store = store
        self.position = after
        self._domains = domains
        self._types = types
        self._batch_size = batch_size
        self._buffer: deque[RecordedEvent] = deque()
        self._closed = False
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
        while True:
            if self._closed or store.closed:
                raise StopAsyncIteration
            signal = store.change_signal()
            await store._ready()
            page = await store._read_all_page(
                self.position, None, self._domains, self._types, self._batch_size, False
            )
            if page:
                self._buffer.extend(page)
                return
            self.caught_up = True
            store._watch(1)
            try:
                await asyncio.wait_for(signal.wait(), FALLBACK_POLL_SECONDS)
            except TimeoutError:
                pass
            finally:
                store._watch(-1)

    async def close(self) -> None:
        """Stop the subscription; a pending ``__anext__`` ends with StopAsyncIteration."""
        self._closed = True
        self._buffer.clear()
        self._store._notify()

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
