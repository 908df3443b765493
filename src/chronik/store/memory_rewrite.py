"""In-place rewrites of the memory store (redaction, dropping a snapshot): a mixin of
``MemoryEventStore`` over its own indexes (``chronik.store.memory``)."""

from __future__ import annotations

import msgspec

from chronik.messages import RecordedEvent, Snapshot, StreamId
from chronik.store.records import PreparedEvent

__all__ = ["MemoryRewrites"]


class MemoryRewrites:
    """``_rewrite_event`` and ``_drop_snapshot`` over the memory store's indexes."""

    _events: list[RecordedEvent]
    _streams: dict[StreamId, list[RecordedEvent]]
    _by_id: dict[str, tuple[PreparedEvent, RecordedEvent]]
    _snapshots: dict[StreamId, Snapshot]

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        """Redaction: the event replaced in every index (the old object dropped), and its
        stream's snapshot."""
        hit = self._by_id.get(event_id)
        if hit is None:
            return None
        prepared, old = hit
        new = msgspec.structs.replace(old, payload=payload, content_type=content_type)
        for rows in (self._events, self._streams.get(old.stream, [])):
            rows[:] = [new if e is old else e for e in rows]
        self._by_id[event_id] = (prepared._replace(payload=payload, content_type=content_type), new)
        self._snapshots.pop(old.stream, None)
        return new

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        """Forget the stream's snapshot; True if there was one."""
        return self._snapshots.pop(stream, None) is not None
