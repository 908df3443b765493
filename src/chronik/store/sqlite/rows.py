"""SQLite event rows as RecordedEvents: the columns the read pages select and their builders.

``read_all`` pages are narrow by default: metadata, content type and tags are NULL on most
events (no metadata, JSON, no tags), so they are not read, and the schema version column says
whether any is set (-1 then; a stored version is >= 1): the few rows that have one are completed,
schema version included, by a second, keyed read (each column a page reads costs ~1k CPU
instructions per row in Python 3.11's sqlite3; this one does two columns' work). A
reader whose pages are mostly such rows reads them wide (every column) until a page ends with a
plain row again (``SQLiteReader._read_all_page``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from chronik.messages import JSON, Position, RecordedEvent, StreamId

__all__ = ["COLS", "EXTRAS", "add_extras", "events", "flagged", "page_cols", "plain_end"]

COLS: Final = (
    "position, stream_id, sequence, event_id, type, schema_version, payload, metadata, "
    "content_type, recorded_at, tags"
)
# a page of one event type: the type is known, so it is not read (one column less per row)
_TYPED_COLS: Final = (
    "position, stream_id, sequence, event_id, schema_version, payload, metadata, "
    "content_type, recorded_at, tags"
)
# the schema version, or -1 when metadata, content type or tags are set (the row is flagged)
_VERSION: Final = "iif(coalesce(metadata, content_type, tags) IS NULL, schema_version, -1)"
_NARROW_COLS: Final = (
    f"position, stream_id, sequence, event_id, type, {_VERSION}, payload, recorded_at"
)
_NARROW_TYPED_COLS: Final = (
    f"position, stream_id, sequence, event_id, {_VERSION}, payload, recorded_at"
)
#: the columns a narrow row leaves out, of the rows whose positions are bound (IN (...))
EXTRAS: Final = (
    "SELECT position, schema_version, metadata, content_type, tags FROM chronik_events "
    "WHERE position IN "
)


def page_cols(typed: bool, wide: bool) -> str:
    """The columns of a read_all page: of one type or not, wide or narrow."""
    if wide:
        return _TYPED_COLS if typed else COLS
    return _NARROW_TYPED_COLS if typed else _NARROW_COLS


def events(
    rows: Sequence[Any], streams: dict[int, StreamId], etype: str | None, wide: bool
) -> list[RecordedEvent]:
    """RecordedEvents of ``page_cols(etype is not None, wide)`` rows, all of type ``etype`` when
    it is given (KeyError: a stream id not in ``streams``). Narrow rows come without metadata,
    content type and tags, and schema version -1 if they have any: ``add_extras`` completes
    the ``flagged`` ones. Tags inline, as
    chronik.store.sqlite.dcb.split_tags (one call less per event)."""
    if etype is None:
        if wide:
            return [
                RecordedEvent(
                    eid,
                    streams[sid],
                    seq,
                    t,
                    sv,
                    payload,
                    Position(pos),
                    at,
                    md,
                    ct or JSON,
                    () if tg is None else tuple(tg.split(" ")),
                )
                for pos, sid, seq, eid, t, sv, payload, md, ct, at, tg in rows
            ]
        return [
            RecordedEvent(eid, streams[sid], seq, t, sv, payload, Position(pos), at)
            for pos, sid, seq, eid, t, sv, payload, at in rows
        ]
    if wide:
        return [
            RecordedEvent(
                eid,
                streams[sid],
                seq,
                etype,
                sv,
                payload,
                Position(pos),
                at,
                md,
                ct or JSON,
                () if tg is None else tuple(tg.split(" ")),
            )
            for pos, sid, seq, eid, sv, payload, md, ct, at, tg in rows
        ]
    return [
        RecordedEvent(eid, streams[sid], seq, etype, sv, payload, Position(pos), at)
        for pos, sid, seq, eid, sv, payload, at in rows
    ]


def flagged(page: Sequence[RecordedEvent]) -> list[int]:
    """The positions of the events of a narrow page whose metadata, content type or tags are
    set (their schema version is -1 until ``add_extras``)."""
    return [e.position.commit for e in page if e.schema_version < 0]


def add_extras(page: list[RecordedEvent], extras: Sequence[Any]) -> None:
    """Complete the events of ``page`` that ``extras`` rows (``EXTRAS``) are of, in place."""
    by_position = {pos: (sv, md, ct, tg) for pos, sv, md, ct, tg in extras}
    for i, event in enumerate(page):
        found = by_position.get(event.position.commit)
        if found is not None:
            sv, md, ct, tg = found
            page[i] = msgspec.structs.replace(
                event,
                schema_version=sv,
                raw_metadata=md,
                content_type=ct or JSON,
                tags=() if tg is None else tuple(tg.split(" ")),
            )


def plain_end(rows: Sequence[Any], typed: bool) -> bool:
    """Whether the last wide row of a page has no metadata, content type or tags."""
    if not rows:
        return False
    last = rows[-1]
    md, ct, tg = (last[6], last[7], last[9]) if typed else (last[7], last[8], last[10])
    return md is None and ct is None and tg is None
