"""Stream retention: how long a stream keeps its events, and the store operations the
scavenger (``chronik.lifecycle.scavenger``) uses to remove them physically.

A stream's ``Retention`` (``store.set_retention``) has up to three rules, KurrentDB's stream
metadata: ``max_age`` (seconds: events recorded longer ago go), ``max_count`` (only the last N
events stay), ``truncate_before`` (events with a lower sequence go). ``truncate_before`` acts at
once (reads start there) and only ever moves forward; ``max_age`` and ``max_count`` act when the
scavenger runs: it moves the stream's truncation point to what they allow, then deletes the
events before it in bounded batches. Per-domain defaults (config ``retention.domains``) apply to
streams without a rule of their own. The stream row stays (its version, its tombstone), so
sequence numbers continue and a tombstoned stream is never reused; the last deletion event of a
deleted stream stays too, so a subscriber that lags behind the scavenger still learns of the
deletion. Adapters with ``supports_deletion`` (memory, SQLite, PostgreSQL) implement the
primitives; the others raise NotSupported.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from chronik.errors import NotSupported, ValidationError
from chronik.messages import EventData, RecordedEvent, StreamId
from chronik.store.records import PreparedEvent
from chronik.store.validation import prepare_event

__all__ = [
    "Retention",
    "RetentionOps",
    "StreamRetention",
    "check_retention",
    "parse_duration",
]

_MAX_AGE: Final = 100 * 365 * 86400.0
_MAX_INT: Final = 2**62
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class Retention(msgspec.Struct, frozen=True, omit_defaults=True):
    """A stream's (or a domain's) retention rules; None: no such rule."""

    #: seconds: events recorded longer ago than this are removed by the scavenger
    max_age: float | None = None
    #: only the last ``max_count`` events are kept (by the scavenger)
    max_count: int | None = None
    #: events with a lower sequence are hidden at once and removed by the scavenger
    truncate_before: int | None = None

    def over(self, default: Retention | None) -> Retention:
        """These rules, each missing one taken from ``default`` (a domain's)."""
        if default is None:
            return self
        return Retention(
            self.max_age if self.max_age is not None else default.max_age,
            self.max_count if self.max_count is not None else default.max_count,
            self.truncate_before,
        )


class StreamRetention(NamedTuple):
    """A stream as the scavenger sees it (``RetentionOps.retention_page``)."""

    stream: StreamId
    version: int  # the last sequence stored, shown or not (-1: none)
    truncate_before: int
    retention: Retention  # the stream's own rules (truncate_before included when > 0)
    tombstone: bool
    first: int | None  # the lowest sequence still stored (None: no event stored)


def parse_duration(value: object, field: str = "max_age") -> float:
    """Seconds from a number or a text such as ``"90s"``, ``"12h"``, ``"30d"``, ``"2w"``."""
    if isinstance(value, bool):
        raise ValidationError(f"invalid duration {value!r}", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value.strip())):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValidationError(
            f"invalid duration {value!r}: a number of seconds or e.g. '90s', '12h', '30d'",
            field=field,
        )
    if not math.isfinite(seconds) or not 0 < seconds <= _MAX_AGE:
        raise ValidationError(
            f"{field} must be > 0 and at most 100 years, got {value!r}", field=field
        )
    return seconds


def check_retention(
    max_age: object = None, max_count: object = None, truncate_before: object = None
) -> Retention:
    """A Retention from untrusted values (ValidationError naming the field)."""
    age = None if max_age is None else parse_duration(max_age)
    if max_count is not None and (type(max_count) is not int or not 1 <= max_count < _MAX_INT):
        raise ValidationError(
            f"max_count must be an int >= 1, got {max_count!r}", field="max_count"
        )
    if truncate_before is not None and (
        type(truncate_before) is not int or not 0 <= truncate_before < _MAX_INT
    ):
        raise ValidationError(
            f"truncate_before must be a sequence >= 0, got {truncate_before!r}",
            field="truncate_before",
        )
    return Retention(age, max_count, truncate_before)


class RetentionOps:
    """The retention part of the store port (mixed into ``EventStore``)."""

    if TYPE_CHECKING:  # EventStore's
        max_payload_bytes: int

        async def _ready(self) -> None: ...

        def _require_deletion(self) -> None: ...

        async def _refuse_archived_compaction(
            self, stream: StreamId, upto: int, exc: ValidationError
        ) -> None: ...

    async def set_retention(self, stream: StreamId, retention: Retention) -> Retention:
        """Store ``stream``'s retention rules (replacing its max_age and max_count; its
        truncation point only moves forward); the rules as stored. The stream need not exist
        yet. NotSupported on a store without deletion."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        if not isinstance(retention, Retention):
            raise ValidationError(f"expected a Retention, got {retention!r}", field="retention")
        checked = check_retention(retention.max_age, retention.max_count, retention.truncate_before)
        self._require_deletion()
        await self._ready()
        await self._set_retention(stream, checked)
        return await self._get_retention(stream)

    async def get_retention(self, stream: StreamId) -> Retention:
        """``stream``'s own retention rules (every field None when it has none)."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        self._require_deletion()
        await self._ready()
        return await self._get_retention(stream)

    async def retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        """Streams that hold events, oldest first, from ``cursor`` (the scavenger's scan)."""
        self._require_deletion()
        await self._ready()
        return await self._retention_page(cursor, limit)

    async def first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        """The lowest stored sequence of ``stream`` recorded at or after ``recorded_at_us``."""
        self._require_deletion()
        await self._ready()
        return await self._first_sequence_since(stream, recorded_at_us)

    async def scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove up to ``limit`` stored events of ``stream`` below sequence ``before`` in one
        short transaction, after moving its truncation point there (and dropping a snapshot
        below it); (events, bytes) removed. The stream's last deletion event stays, and so does
        an event the adapter must keep (SQLite: the log's last one, whose position would be
        reused). ``dry_run``: change nothing, count everything that would go (no limit)."""
        self._require_deletion()
        if type(before) is not int or before < 0:
            raise ValidationError(f"invalid sequence {before!r}", field="before")
        if type(limit) is not int or limit < 1:
            raise ValidationError(f"invalid limit {limit!r}", field="limit")
        await self._ready()
        return await self._scavenge_stream(stream, before, limit, dry_run)

    async def compact_stream(self, stream: StreamId, upto: int, event: EventData) -> RecordedEvent:
        """Close the books of ``stream`` at sequence ``upto``: ``event`` (the model's summary of
        events 0..upto, e.g. an aggregate's state) takes the place of the event at ``upto`` (its
        sequence, position and record time kept) and the events before it are hidden at once
        (the truncation point moves to ``upto``) and removed by the scavenger. Every later
        event keeps its sequence and position; a projection that rebuilds reads ``event`` where
        the history it sums up was. Retried with the same event id it answers the stored event.
        ValidationError (``upto``) unless the stream shows an event at ``upto``; StreamDeleted
        for a tombstone; NotSupported on a store without deletion."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        if type(upto) is not int or upto < 0:
            raise ValidationError(f"invalid sequence {upto!r}", field="upto")
        prepared = prepare_event(event, self.max_payload_bytes)
        self._require_deletion()
        await self._ready()
        try:
            return await self._compact_stream(stream, upto, prepared)
        except ValidationError as exc:  # the event at ``upto`` may be archived: say so
            await self._refuse_archived_compaction(stream, upto, exc)
            raise

    # --- what adapters with supports_deletion implement ---------------------------------------

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        raise NotSupported("stream compaction", type(self).__name__)

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        raise NotSupported("stream retention", type(self).__name__)

    async def _get_retention(self, stream: StreamId) -> Retention:
        raise NotSupported("stream retention", type(self).__name__)

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        raise NotSupported("stream retention", type(self).__name__)

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        raise NotSupported("stream retention", type(self).__name__)

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        raise NotSupported("scavenging", type(self).__name__)
