"""Live ticks for the admin pages: a Server-Sent Event each time the store's head moves.

The browser (static/admin.js) turns each ``tick`` into an htmx ``chronik:tick`` event on the
page body; the live parts of a page refresh on it. Ticks carry only the new head position (no
event data), at most one per LIVE_MIN_GAP seconds; commits of this process wake the stream at
once, other processes' commits (a shared SQLite or PostgreSQL store) within LIVE_POLL seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from chronik.errors import StoreClosed, StoreUnavailable
from chronik.store.base import EventStore

__all__ = ["ticks"]

LIVE_MIN_GAP: Final = 0.3  # seconds between two ticks (bursts are coalesced)
LIVE_POLL: Final = 1.0  # seconds between head checks when no in-process commit wakes us
KEEPALIVE: Final = 15.0


async def ticks(store: EventStore, seen: str | None) -> AsyncIterator[bytes]:
    """``hello`` at once, then ``tick`` (data: the head) whenever it differs from ``seen``
    (the head the page was rendered with; None: the head at connection time)."""
    try:
        async for chunk in _ticks(store, seen):
            yield chunk
    except (StoreClosed, StoreUnavailable):
        return  # the server is stopping (or the store is down): the browser reconnects


async def _ticks(store: EventStore, last: str | None) -> AsyncIterator[bytes]:
    quiet = 0.0
    yield b"retry: 2000\nevent: hello\ndata: \n\n"
    while True:
        signal = store.change_signal()
        head = await store.head()
        text = "" if head is None else str(head)
        if last is None:
            last = text
        if text != last:
            last, quiet = text, 0.0
            yield f"event: tick\ndata: {text}\n\n".encode()
            await asyncio.sleep(LIVE_MIN_GAP)
            continue
        try:
            await asyncio.wait_for(signal.wait(), LIVE_POLL)
        except TimeoutError:
            quiet += LIVE_POLL
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield b": keepalive\n\n"
