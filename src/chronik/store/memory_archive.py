"""Dropping archived events on the memory store (``chronik.store.archive_ops``): a mixin of
``MemoryEventStore`` over its own lists and maps (``chronik.store.memory``)."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import TYPE_CHECKING

from chronik.messages import Position, RecordedEvent, StreamId
from chronik.store.records import PreparedEvent

__all__ = ["MemoryArchive"]


class MemoryArchive:
    """The archive primitives over the memory store's indexes."""

    _events: list[RecordedEvent]
    _streams: dict[StreamId, list[RecordedEvent]]
    _by_id: dict[str, tuple[PreparedEvent, RecordedEvent]]
    _emptied: dict[StreamId, int]
    #: the hot log's low bound (``archive_floor``)
    _floor: Position | None = None

    if TYPE_CHECKING:  # MemoryRetention's

        def _reindex_tags(self) -> None: ...

    async def _archive_floor(self) -> Position | None:
        return self._floor

    async def _drop_archived(self, upto: Position) -> int:
        events = self._events
        n = bisect.bisect_right(events, upto, key=lambda e: e.position)
        gone = events[:n]
        if gone:
            del events[:n]
            # a stream's events are in position order too: each loses a prefix
            for stream, count in Counter(e.stream for e in gone).items():
                stored = self._streams[stream]
                if count >= len(stored):
                    self._emptied[stream] = stored[-1].sequence
                del stored[:count]
            for e in gone:
                self._by_id.pop(e.event_id, None)
            self._reindex_tags()
        if self._floor is None or upto > self._floor:
            self._floor = upto
        return len(gone)
