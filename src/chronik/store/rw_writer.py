"""What a ``ReadWriteStore`` leaves to its write store: deletes, retention, scavenging,
compaction, stream starts, in-place rewrites and dropping archived events (deletes themselves
go there with ``_write``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronik.messages import Position, RecordedEvent, StreamId
from chronik.store.records import PreparedEvent
from chronik.store.retention import Retention, StreamRetention

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["WriterOperations"]


class WriterOperations:
    """Streams-over-time operations, each the write store's own (``self.writer``)."""

    writer: EventStore

    def _require_deletion(self) -> None:
        self.writer._require_deletion()

    async def _tombstoned(self, stream: StreamId) -> bool:
        return await self.writer._tombstoned(stream)

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        await self.writer._set_retention(stream, retention)

    async def _get_retention(self, stream: StreamId) -> Retention:
        return await self.writer._get_retention(stream)

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        return await self.writer._retention_page(cursor, limit)

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        return await self.writer._first_sequence_since(stream, recorded_at_us)

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        return await self.writer._scavenge_stream(stream, before, limit, dry_run)

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        return await self.writer._compact_stream(stream, upto, event)

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        return await self.writer._rewrite_event(event_id, payload, content_type)

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        return await self.writer._drop_snapshot(stream)

    async def _start_stream_at(self, stream: StreamId, sequence: int) -> None:
        await self.writer._start_stream_at(stream, sequence)

    async def _archive_floor(self) -> Position | None:
        return await self.writer._archive_floor()

    async def _drop_archived(self, upto: Position) -> int:
        return await self.writer._drop_archived(upto)
