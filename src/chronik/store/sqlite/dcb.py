"""DCB on SQLite: the tag index, query items as SQL, and the checks a unit passes first.

An event's tags are stored twice in its transaction: on the event row (``tags``, the sorted tags
joined by one space, NULL when none) and one row each in ``chronik_event_tags (tag, position)``,
a WITHOUT ROWID B-tree. An item with tags walks that index for its first tag in position order
and probes the index for its other tags (joining the events only to filter types), so it costs
what it matches, not the length of the log; an item without tags scans the events by position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

from chronik.dcb import Query, QueryItem
from chronik.errors import AppendConditionFailed, WrongExpectedVersion
from chronik.messages import Position
from chronik.store.base import PreparedEvent, WriteUnit, check_expected, is_retry

__all__ = [
    "INSERT_TAG",
    "check_unit",
    "first_match",
    "item_positions_sql",
    "query_payloads",
    "query_positions",
    "split_tags",
    "tag_rows",
]

INSERT_TAG: Final = "INSERT INTO chronik_event_tags (tag, position) VALUES (?, ?)"
_VERSION: Final = (
    "SELECT CASE WHEN truncate_before > version THEN NULL ELSE version END "
    "FROM chronik_streams WHERE tenant = ? AND domain = ? AND aggregate_id = ?"
)
_CHUNK: Final = 500
#: a QueryPayloadRow (chronik.store.read): content_type is NULL for JSON, so one column says
#: "JSON at version N" or the content type
_PAYLOAD_COLS: Final = "type, ifnull(content_type, schema_version), payload, position, 0"
Reader = Callable[[str, Sequence[Any]], list[Any]]


def split_tags(text: str | None) -> tuple[str, ...]:
    """An event's tags from its ``tags`` column (written as ``" ".join(tags) or None``)."""
    return tuple(text.split(" ")) if text else ()


def tag_rows(events: Sequence[PreparedEvent], first_position: int) -> list[tuple[str, int]]:
    """The tag index rows of ``events``, stored at consecutive positions from
    ``first_position``."""
    return [(tag, first_position + i) for i, e in enumerate(events) for tag in e.tags]


def item_positions_sql(
    item: QueryItem,
    after: int | None,
    before: int | None,
    backward: bool,
    limit: int,
    tenant: str | None = None,
) -> tuple[str, list[Any]]:
    """SQL and parameters for the positions of up to ``limit`` events ``item`` matches in
    (``after``, ``before``), in position order (newest first with ``backward``); of
    ``tenant`` only, when given."""
    params: list[Any] = []
    where: list[str] = []
    order = "DESC" if backward else "ASC"
    if item.tags:
        first, *others = item.tags
        col = "t.position"
        source = "chronik_event_tags t"
        where.append("t.tag = ?")
        params.append(first)
        if item.types or tenant is not None:  # the event row only to filter its type (or
            # tenant); CROSS JOIN: the index leads
            source += " CROSS JOIN chronik_events e ON e.position = t.position"
    else:
        col = "position"
        source = "chronik_events"
    if tenant is not None:
        where.append(f"{'e.' if item.tags else ''}tenant = ?")
        params.append(tenant)
    if after is not None:
        where.append(f"{col} > ?")
        params.append(after)
    if before is not None:
        where.append(f"{col} < ?")
        params.append(before)
    if item.tags:
        for tag in others:
            where.append(
                "EXISTS (SELECT 1 FROM chronik_event_tags o WHERE o.tag = ? "
                "AND o.position = t.position)"
            )
            params.append(tag)
    if item.types:
        where.append(f"{'e.' if item.tags else ''}type IN ({','.join('?' * len(item.types))})")
        params.extend(item.types)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(limit)
    return f"SELECT {col} FROM {source}{clause} ORDER BY {col} {order} LIMIT ?", params


def query_positions(
    read: Reader,
    query: Query,
    after: Position | None,
    before: Position | None,
    backward: bool,
    limit: int,
    tenant: str | None = None,
) -> list[int]:
    """The positions of the first ``limit`` events (of ``tenant``, when given) some item of
    ``query`` matches in (``after``, ``before``), in order (newest first with ``backward``);
    ``query`` has no item that matches every event."""
    lo = None if after is None else after.commit
    hi = None if before is None else before.commit
    found: set[int] = set()
    for item in query.items:  # each item's first ``limit`` matches; the union's first count
        sql, params = item_positions_sql(item, lo, hi, backward, limit, tenant)
        found.update(row[0] for row in read(sql, params))
    return sorted(found, reverse=backward)[:limit]


def query_payloads(
    read: Reader, query: Query, after: Position | None, limit: int, tenant: str | None
) -> list[Any]:
    """Up to ``limit`` payload rows (``QueryPayloadRow``) of the events (of ``tenant``, when
    given) ``query`` matches after ``after``, in position order: the positions from the tag
    index, then only the columns a fold needs."""
    if any(not item.tags and not item.types for item in query.items):  # every event
        of_tenant, params = ("tenant = ? AND ", [tenant]) if tenant is not None else ("", [])
        return read(
            f"SELECT {_PAYLOAD_COLS} FROM chronik_events WHERE {of_tenant}position > ? "
            "ORDER BY position LIMIT ?",
            [*params, -1 if after is None else after.commit, limit],
        )
    positions = query_positions(read, query, after, None, False, limit, tenant)
    if not positions:
        return []
    return read(
        f"SELECT {_PAYLOAD_COLS} FROM chronik_events WHERE position IN "
        f"({','.join('?' * len(positions))}) ORDER BY position",
        positions,
    )


def first_match(
    conn: sqlite3.Connection, query: Query, after: Position | None, tenant: str | None = None
) -> tuple[int, int] | None:
    """The position of the first event after ``after`` (of ``tenant``, when given) that
    ``query`` matches, with the index of the first item it matches; None when there is
    none."""
    lo = None if after is None else after.commit
    best: tuple[int, int] | None = None  # (position, item)
    for n, item in enumerate(query.items):
        # a later item only counts with an earlier event: bound it by the best so far
        bound = None if best is None else best[0]
        sql, params = item_positions_sql(item, lo, bound, False, 1, tenant)
        row = conn.execute(sql, params).fetchone()
        if row is not None:
            best = (row[0], n)
    return None if best is None else (best[1], best[0])


def _stored_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = conn.execute(
            f"SELECT event_id FROM chronik_events WHERE event_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        found.update(r[0] for r in rows)
    return found


def check_unit(conn: sqlite3.Connection, unit: WriteUnit) -> None:
    """Raise WrongExpectedVersion or AppendConditionFailed if a check of ``unit`` fails against
    the store as it is before the unit's appends; a check whose events are all stored already
    (a retry of a committed unit) is skipped."""
    retries: dict[tuple[str, ...], bool] = {}

    def retry(ids: tuple[str, ...]) -> bool:
        if ids not in retries:
            stored: Callable[[str], bool] = _stored_ids(conn, ids).__contains__ if ids else bool
            retries[ids] = is_retry(ids, stored)
        return retries[ids]

    for check in unit.expects:
        if not retry(check.event_ids):
            st = check.stream
            row = conn.execute(_VERSION, (st.tenant, st.domain, st.aggregate_id)).fetchone()
            actual: int | None = None if row is None else row[0]
            if not check_expected(check.expected, actual):
                raise WrongExpectedVersion(st, check.expected, actual)
    for cond in unit.conditions:
        if not retry(cond.event_ids):
            found = first_match(conn, cond.query, cond.after, cond.tenant)
            if found is not None:
                raise AppendConditionFailed(found[0], Position(found[1]), str(cond.query))
