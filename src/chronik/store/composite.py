"""The base of stores made of other stores (``ReadWriteStore``, ``GroupStore``).

A composite opens and closes its parts with itself (it owns them), takes its limits and table
support from the part that writes, and fans the parts' change signals in: while someone waits
on the composite's ``change_signal()`` (inside ``watching()``), it watches each part it reads
from and sets its own signal when any of them commits or polls a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from chronik.errors import ConfigurationError
from chronik.store.base import EventStore
from chronik.store.records import StoreHealth

__all__ = ["CompositeStore"]


class CompositeStore(EventStore):
    """An event store over ``parts``; ``home`` (if any) takes its writes and table checks."""

    supports_tables = True  # as far as ``home`` does: ``_require_tables`` asks it

    def __init__(self, url: str, parts: Sequence[EventStore], home: EventStore | None) -> None:
        for part in parts:
            if not isinstance(part, EventStore):
                raise ConfigurationError(f"{type(self).__name__}: {part!r} is not an EventStore")
        super().__init__()
        if home is not None:  # validate appends as the store that commits them would
            self.max_payload_bytes = home.max_payload_bytes
            self.max_append_events = home.max_append_events
        self.url = url
        self._parts: list[EventStore] = list(dict.fromkeys(parts))  # one store, one part
        self._home = home
        self._watchers = 0
        self._watching: contextlib.ExitStack | None = None
        self._forwards: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        opened: list[EventStore] = []
        try:
            for part in self._parts:
                await part.open()
                opened.append(part)
        except BaseException:
            for part in opened:
                with contextlib.suppress(Exception):
                    await part.close()
            raise

    async def _close(self) -> None:
        self._stop_watching()
        for part in self._parts:
            with contextlib.suppress(Exception):
                await part.close()

    @property
    def health(self) -> StoreHealth:
        """The health of the part that writes (closed: not ok)."""
        if self._state == "closed":
            return StoreHealth(False, "the store is closed", None, 0)
        if self._home is None:
            return self._health
        return self._home.health

    def _require_tables(self) -> None:
        if self._home is None:
            super()._require_tables()
        else:
            self._home._require_tables()

    # --- change signals: fan in ---------------------------------------------------------------

    def _watched(self) -> Sequence[EventStore]:
        """The parts whose commits wake this store's readers (default: all of them)."""
        return self._parts

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and self._watching is None and not self.closed:
            self._watching = contextlib.ExitStack()
            loop = asyncio.get_running_loop()
            for part in self._watched():
                self._watching.enter_context(part.watching())
                self._forwards.append(loop.create_task(self._forward(part)))
        elif self._watchers <= 0:
            self._stop_watching()

    def _stop_watching(self) -> None:
        for task in self._forwards:
            task.cancel()
        self._forwards.clear()
        if self._watching is not None:
            self._watching.close()
            self._watching = None

    async def _forward(self, part: EventStore) -> None:
        """Set this store's signal each time ``part``'s is set, until it closes."""
        while not part.closed and not self.closed:
            await part.change_signal().wait()
            self._notify()
