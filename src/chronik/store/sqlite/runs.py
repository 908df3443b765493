"""Stream pages for the repository's fast fold on SQLite: gapless runs of three-column rows.

The driver's cost grows with each column a row returns, so a run has two: the payload and a
key that is the event's type when it is JSON at the schema version the caller names (the
version, content type and sequence are left out). One statement reads the stream's row (its
version, truncation point) and the window of events after it; the rows' sequences follow from
the window when their count fills it up to the stream's version (a stream's events have
consecutive sequences from its truncation point; a page that does not, or one read while an
archive is attached, is not a run: the caller reads ``read_stream_payloads`` instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from chronik.messages import StreamId

if TYPE_CHECKING:
    from chronik.archive.archive import Archive

__all__ = ["RUN", "SQLiteRuns", "run_of"]

_FLOOR: Final = "max(?2, (SELECT truncate_before FROM chronik_streams WHERE id = ?1))"
# the stream's row first, as (the window's first sequence, the stream's version): an integer
# where the events have their type; then the window. One statement, so one read transaction:
# the version and the rows agree. An event's first column is its type when it is JSON at
# version ?4, else " type version" (JSON) or " type" (another content type).
RUN: Final = (
    "SELECT max(?2, truncate_before), version FROM chronik_streams WHERE id = ?1 UNION ALL "
    "SELECT * FROM (SELECT CASE WHEN content_type IS NOT NULL THEN ' ' || type "
    "WHEN schema_version = ?4 THEN type ELSE ' ' || type || ' ' || schema_version END, payload "
    f"FROM chronik_events WHERE stream_id = ?1 AND sequence >= {_FLOOR} "
    f"AND sequence < {_FLOOR} + ?3 ORDER BY sequence)"
)


def run_of(rows: list[Any], limit: int) -> tuple[int, bool, list[Any]] | None:
    """(first sequence, whether the stream ends in the window, the event rows) of ``RUN``'s
    rows, or None unless they are the stream's row and a gapless window."""
    if not rows or type(rows[0][0]) is not int:
        return None
    first, version = rows[0]
    del rows[0]
    end = first + limit  # the window: [first, end)
    if len(rows) != max(0, min(version + 1, end) - first):
        return None
    return first, version < end, rows


class SQLiteRuns:
    """``read_stream_run`` (mixed into the SQLite reader)."""

    if TYPE_CHECKING:  # the reader's and EventStore's
        archive: Archive | None

        async def _ready(self) -> None: ...

        def _stream_key_id(self, stream: StreamId) -> int | None: ...

        def _read(self, sql: str, params: Sequence[Any]) -> list[Any]: ...

    async def read_stream_run(
        self, stream: StreamId, from_sequence: int, limit: int, version: int
    ) -> tuple[int, bool, list[Any]] | None:
        """A page of ``stream`` from ``from_sequence`` (at most ``limit`` events) as (the first
        event's sequence, whether the stream ends in the page, rows of (key, payload) with
        consecutive sequences, the key the event's type when it is JSON at schema ``version``,
        else " type version" for JSON, " type" for another content type); None when the page
        is not such a run or an archive is attached (read ``read_stream_payloads`` then)."""
        await self._ready()
        if self.archive is not None:
            return None
        sid = self._stream_key_id(stream)
        if sid is None:
            return from_sequence, True, []
        return run_of(self._read(RUN, (sid, from_sequence, limit, version)), limit)
