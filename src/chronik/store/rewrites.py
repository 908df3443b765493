"""The store port's in-place rewrites (redaction, forgetting: ``chronik.lifecycle``), a mixin of
``EventStore``: the public methods validate, adapters that can rewrite implement the two
primitives (memory: ``chronik.store.memory_rewrite``; SQLite and PostgreSQL: their ``rewrite``
modules); the rest raise NotSupported.
"""

from __future__ import annotations

from chronik.errors import NotSupported, ValidationError
from chronik.messages import RecordedEvent, StreamId
from chronik.store.lifecycle import StoreLifecycle
from chronik.store.validation import check_event_id

__all__ = ["Rewrites"]


class Rewrites(StoreLifecycle):
    """``rewrite_event`` and ``drop_snapshot``; NotSupported unless the adapter implements
    ``_rewrite_event`` / ``_drop_snapshot``."""

    async def rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        """Replace one stored event's payload and content type in place (type, ids, stream,
        sequence, position and record time kept) and drop its stream's snapshot, in one
        transaction; the event as now stored, None if there is none with this id.
        NotSupported on an adapter that cannot rewrite (memory, SQLite, PostgreSQL can)."""
        check_event_id(event_id)
        if not isinstance(payload, bytes) or not isinstance(content_type, str):
            raise ValidationError("a rewrite needs bytes and a content type", field="payload")
        await self._ready()
        return await self._rewrite_event(event_id, payload, content_type)

    async def drop_snapshot(self, stream: StreamId) -> bool:
        """Delete ``stream``'s snapshot (it may hold values that must go); True if one was
        there. NotSupported on an adapter that cannot (memory, SQLite, PostgreSQL can)."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        await self._ready()
        return await self._drop_snapshot(stream)

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        raise NotSupported("rewriting an event in place (redaction)", type(self).__name__)

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        raise NotSupported("dropping a snapshot", type(self).__name__)
