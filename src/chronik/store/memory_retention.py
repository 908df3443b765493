"""Deletes, retention and scavenging on the memory store: a mixin of ``MemoryEventStore`` over
its own indexes (``chronik.store.memory``; the rules: ``chronik.store.retention``)."""

from __future__ import annotations

import bisect

from chronik.errors import DuplicateEventError, StreamDeleted, ValidationError
from chronik.messages import RecordedEvent, Snapshot, StreamId
from chronik.store.deletion import STREAM_DELETED
from chronik.store.records import PreparedEvent
from chronik.store.retention import Retention, StreamRetention
from chronik.store.stream_start import check_start

__all__ = ["MemoryRetention"]


class MemoryRetention:
    """The retention primitives over the memory store's lists and maps."""

    _events: list[RecordedEvent]
    _streams: dict[StreamId, list[RecordedEvent]]
    _stream_order: list[StreamId]
    _by_id: dict[str, tuple[PreparedEvent, RecordedEvent]]
    _by_tag: dict[str, list[int]]
    _snapshots: dict[StreamId, Snapshot]
    _truncated: dict[StreamId, int]
    _tombstones: set[StreamId]
    _emptied: dict[StreamId, int]
    _retention: dict[StreamId, Retention]
    _last_position: int

    def _init_retention(self) -> None:
        # deletion (chronik.store.deletion): the first sequence a stream still shows, tombstones
        self._truncated = {}
        self._tombstones = set()
        # positions are never reused; a stream whose every event was scavenged keeps its last
        # sequence; the streams' own retention rules
        self._last_position = 0
        self._emptied = {}
        self._retention = {}

    def _version(self, stream: StreamId) -> int | None:
        last, before, _dead = self._stream_state(stream)
        return last if last >= before else None

    def _stream_state(self, stream: StreamId) -> tuple[int, int, bool]:
        """(last sequence stored or -1, first sequence shown, tombstoned)."""
        events = self._streams.get(stream)
        last = events[-1].sequence if events else self._emptied.get(stream, -1)
        return last, self._truncated.get(stream, 0), stream in self._tombstones

    async def _tombstoned(self, stream: StreamId) -> bool:
        return stream in self._tombstones

    def _apply_deletes(self, deletes: dict[StreamId, tuple[int, bool]]) -> None:
        """Hide each stream up to ``before`` (tombstone it when hard), drop its snapshot."""
        for stream, (before, hard) in deletes.items():
            self._truncated[stream] = before
            if hard:
                self._tombstones.add(stream)
            snap = self._snapshots.get(stream)
            if snap is not None and snap.sequence < before:  # a state of what is gone
                del self._snapshots[stream]

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        self._retention[stream] = Retention(retention.max_age, retention.max_count)
        if retention.truncate_before is not None:
            self._truncate(stream, retention.truncate_before)

    def _truncate(self, stream: StreamId, before: int) -> None:
        """Move the stream's truncation point forward to ``before`` (a snapshot below goes)."""
        if before > self._truncated.get(stream, 0):
            self._truncated[stream] = before
        snap = self._snapshots.get(stream)
        if snap is not None and snap.sequence < self._truncated[stream]:
            del self._snapshots[stream]

    async def _start_stream_at(self, stream: StreamId, sequence: int) -> None:
        """The stream as scavenging leaves it (``chronik.store.stream_start``)."""
        last, _before, dead = self._stream_state(stream)
        if check_start(stream, sequence, (last, dead, bool(self._streams.get(stream)))):
            self._emptied[stream] = sequence - 1
            self._truncate(stream, sequence)

    async def _get_retention(self, stream: StreamId) -> Retention:
        own = self._retention.get(stream, Retention())
        before = self._truncated.get(stream, 0)
        return Retention(own.max_age, own.max_count, before or None)

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        out: list[StreamRetention] = []
        start = cursor or 0
        for i in range(start, len(self._stream_order)):
            s = self._stream_order[i]
            events = self._streams[s]
            if events:
                before = self._truncated.get(s, 0)
                own = self._retention.get(s, Retention())
                rules = Retention(own.max_age, own.max_count, before or None)
                info = StreamRetention(
                    s,
                    events[-1].sequence,
                    before,
                    rules,
                    s in self._tombstones,
                    events[0].sequence,
                )
                out.append(info)
                if len(out) == limit:
                    return out, i + 1
        return out, None

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        for event in self._streams.get(stream, []):
            if event.recorded_at_us >= recorded_at_us:
                return event.sequence
        return None

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        events = self._streams.get(stream, [])
        below = [e for e in events if e.sequence < before]
        marks = [e for e in below if e.type == STREAM_DELETED]
        keep = marks[-1] if marks else None  # the last deletion event stays
        gone = [e for e in below if e is not keep]
        if not dry_run:
            self._truncate(stream, before)
            gone = gone[:limit]
        size = sum(len(e.payload) + len(e.raw_metadata or b"") for e in gone)
        if dry_run or not gone:
            return len(gone), size
        ids = {id(e) for e in gone}
        last = events[-1].sequence
        events[:] = [e for e in events if id(e) not in ids]
        if not events:
            self._emptied[stream] = last
        self._events[:] = [e for e in self._events if id(e) not in ids]
        for e in gone:
            self._by_id.pop(e.event_id, None)
        self._reindex_tags()
        return len(gone), size

    def _reindex_tags(self) -> None:
        self._by_tag.clear()  # indexes into _events: rebuilt
        for i, e in enumerate(self._events):
            for tag in e.tags:
                self._by_tag.setdefault(tag, []).append(i)

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        last, before, dead = self._stream_state(stream)
        if dead:
            raise StreamDeleted(stream)
        hit = self._by_id.get(event.event_id)
        if hit is not None:  # a retry answers the stored event; anything else is a duplicate
            stored, rec = hit
            if (rec.stream, rec.sequence) != (stream, upto):
                raise DuplicateEventError(event.event_id, "in another place")
            if stored != event:
                raise DuplicateEventError(event.event_id, "with different content")
            return rec
        events = self._streams.get(stream, [])
        if not events or not max(before, events[0].sequence) <= upto <= last:
            raise ValidationError(f"{stream} shows no event at sequence {upto}", field="upto")
        old = events[upto - events[0].sequence]
        new = RecordedEvent(
            event.event_id,
            stream,
            upto,
            event.type,
            event.schema_version,
            event.payload,
            old.position,
            old.recorded_at_us,
            event.metadata,
            event.content_type,
            event.tags,
        )
        events[upto - events[0].sequence] = new
        at = bisect.bisect_left(self._events, old.position, key=lambda e: e.position)
        self._events[at] = new
        del self._by_id[old.event_id]
        self._by_id[event.event_id] = (event, new)
        self._reindex_tags()
        self._truncate(stream, upto)
        return new
