"""DCB on PostgreSQL: the locks of a unit of work, its checks, and query reads as SQL.

Tag items go through the ``event_tags`` B-tree (``(tag, xid, id)``, written in the event's
transaction), so a tag query costs what it matches; tag-less items scan events by position
with their type filter, as ``read_all`` does.

Serialising overlapping conditions: every append takes SHARED advisory locks on the DCB keys of
its events (``*``, ``y/<type>``, ``t/<tag>``, in the append functions); a condition takes
EXCLUSIVE locks, per item: its tags' keys if it has tags, else its types' keys, else ``*``. An
event the item matches carries every one of those tags (or has one of those types), so its
writer and the condition never run at once: the writer committed before the condition's check
(which then sees it), or it waits and takes its transaction id, its position, after the
condition's transaction committed.

The common unit, ``store.append_tagged`` (tagged events, at most one condition, nothing else),
runs as one call of the ``append_tagged`` function (``append_tagged_one`` for one event:
``one_statement``, ``tagged_call``): the same locks in the same order, the check and the writes
in one autocommit round trip. A unit of work writes each run of tagged requests with one call
of it too (``tagged_run``). ``query_payloads_sql`` is the DCB command path's lean read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from chronik.dcb import Query, QueryItem
from chronik.errors import AppendConditionFailed, WrongExpectedVersion
from chronik.messages import JSON, NO_STREAM, AppendResult, Position
from chronik.store.base import (
    AppendRequest,
    ConditionCheck,
    PreparedEvent,
    WriteUnit,
    check_expected,
    is_retry,
)
from chronik.store.postgres.locks import tagged_locks

__all__ = [
    "check_unit",
    "event_arrays",
    "first_match_sql",
    "one_statement",
    "query_page_sql",
    "query_payloads_sql",
    "tagged_args",
    "tagged_call",
    "tagged_run",
]

_HORIZON: Final = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"


def tagged_run(
    appends: Sequence[AppendRequest], start: int, resolved: dict[int, AppendResult]
) -> int:
    """The end (exclusive) of the run of tagged requests from ``start``: none resolved, each one
    event opening a stream named by its id (``NO_STREAM``) of the first one's domain and tenant,
    as ``prepare_tagged`` makes them."""
    first = appends[start].stream
    end = start
    while end < len(appends) and end not in resolved:
        req = appends[end]
        st = req.stream
        if not (
            len(req.events) == 1
            and req.expected is NO_STREAM
            and st.aggregate_id == req.events[0].event_id
            and st.domain == first.domain
            and st.tenant == first.tenant
        ):
            break
        end += 1
    return end


def one_statement(unit: WriteUnit, resolved: dict[int, AppendResult]) -> bool:
    """Whether ``unit`` runs as one ``append_tagged`` call in autocommit: tagged requests only,
    at most one condition, no other check or side write, nothing resolved yet, and more than a
    lone unconditional event (which ``append_event`` writes)."""
    appends = unit.appends
    return (
        bool(appends)
        and not resolved
        and len(unit.conditions) <= 1
        and (len(appends) > 1 or bool(unit.conditions))
        and not (unit.expects or unit.checkpoints or unit.snapshots or unit.tables or unit.leases)
        and tagged_run(appends, 0, resolved) == len(appends)
    )


def tagged_args(
    requests: Sequence[AppendRequest],
    cond: ConditionCheck | None,
    now: int,
    classes: tuple[int, int],
) -> tuple[Any, ...]:
    """The arguments of the ``append_tagged`` function for a run of tagged ``requests`` and
    at most one condition (functions.py, append_v11.py)."""
    st = requests[0].stream
    events = [r.events[0] for r in requests]
    return (
        st.tenant,
        st.domain,
        *event_arrays(events),
        now,
        *_condition_args(cond),
        *tagged_locks(requests, cond, classes),
    )


_ONE_SQL: dict[str, str] = {}


def tagged_call(
    s: str,
    append_tagged: str,
    requests: Sequence[AppendRequest],
    cond: ConditionCheck | None,
    now: int,
    classes: tuple[int, int],
) -> tuple[str, tuple[Any, ...]]:
    """The statement and arguments of a tagged append: ``append_tagged_one`` (scalar event
    arguments) for a single event, else ``append_tagged`` (functions.py); both answer
    (o_status, o_item, o_xid, o_ids)."""
    if len(requests) != 1:
        return append_tagged, tagged_args(requests, cond, now, classes)
    sql = _ONE_SQL.get(s)
    if sql is None:
        sql = _ONE_SQL[s] = (
            f"SELECT o_status, o_item, o_xid, o_ids FROM {s}.append_tagged_one"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        )
    st, e = requests[0].stream, requests[0].events[0]
    return sql, (
        st.tenant,
        st.domain,
        e.event_id,
        e.type,
        e.schema_version,
        e.payload,
        e.metadata,
        None if e.content_type == JSON else e.content_type,
        " ".join(e.tags) or None,
        now,
        *_condition_args(cond),
        *tagged_locks(requests, cond, classes),
    )


def _condition_args(cond: ConditionCheck | None) -> tuple[Any, ...]:
    """The condition's arguments of the tagged append functions: each item's types and tags
    joined by one space (NULL for none), and its ``after`` (NULLs: no condition, no after)."""
    if cond is None:
        return (None, None, None, None)
    items, after = cond.query.items, cond.after
    return (
        [" ".join(i.types) or None for i in items],
        [" ".join(i.tags) or None for i in items],
        None if after is None else after.commit,
        None if after is None else after.index,
    )


def event_arrays(events: Sequence[PreparedEvent]) -> tuple[list[Any], ...]:
    """The per-event arrays the append functions take: ids, types, schema versions, payloads,
    metadata, content types (NULL for JSON) and tags (joined by one space, NULL for none)."""
    return (
        [e.event_id for e in events],
        [e.type for e in events],
        [e.schema_version for e in events],
        [e.payload for e in events],
        [e.metadata for e in events],
        [None if e.content_type == JSON else e.content_type for e in events],
        [" ".join(e.tags) or None for e in events],
    )


async def check_unit(conn: asyncpg.Connection, s: str, version_sql: str, unit: WriteUnit) -> None:
    """Raise WrongExpectedVersion or AppendConditionFailed if a check of ``unit`` fails against
    the store as it is before the unit's writes (its keys locked); a check whose events are all
    stored already (a retry) is skipped."""
    ids = {i for c in unit.expects for i in c.event_ids}
    ids.update(i for c in unit.conditions for i in c.event_ids)
    stored: set[str] = set()
    if ids:
        rows = await conn.fetch(
            f"SELECT event_id FROM {s}.events WHERE event_id = ANY($1::text[])", list(ids)
        )
        stored = {r[0] for r in rows}
    for check in unit.expects:
        if is_retry(check.event_ids, stored.__contains__):
            continue
        st = check.stream
        version = await conn.fetchval(version_sql, st.tenant, st.domain, st.aggregate_id)
        actual = None if version is None or version < 0 else int(version)
        if not check_expected(check.expected, actual):
            raise WrongExpectedVersion(st, check.expected, actual)
    for cond in unit.conditions:
        if is_retry(cond.event_ids, stored.__contains__):
            continue
        statement, args = first_match_sql(s, cond.query, cond.after)
        row = await conn.fetchrow(statement, *args)
        if row is not None:
            raise AppendConditionFailed(row[0], Position(row[1], row[2]), str(cond.query))


def _item_sql(
    s: str,
    item: QueryItem,
    args: list[Any],
    bound: tuple[str, Position] | None,
    order: str,
    limit: str,
    horizon: bool,
    payload: bool = False,
    tenant: str = "",
) -> str:
    """The (xid, id) of the events ``item`` matches past ``bound`` (op, position), in
    ``order``, at most ``limit`` (a parameter); below the safe horizon with ``horizon``; with
    ``payload``, their payload rows (``_PAYLOAD_SELECT``) instead; with ``tenant`` (a
    parameter), of that tenant only: in the probe of a tag's event, else by its index."""
    where = [f"k.tenant = {tenant}"] if tenant and not item.tags else []
    source = f"{s}.event_tags k" if item.tags else f"{s}.events k"
    if item.tags:
        args.append(item.tags[0])
        where.append(f"k.tag = ${len(args)}")
        if payload or item.types or len(item.tags) > 1 or tenant:
            # one index probe per key, whatever plan the statement caches (a generic plan
            # made while the tables were small could scan events for each key otherwise)
            wanted = "e.type, e.content_type, e.schema_version, e.payload" if payload else "e.type"
            of_tenant = f" AND e.tenant = {tenant}" if tenant else ""
            source += (
                f" CROSS JOIN LATERAL (SELECT {wanted}, e.tags FROM {s}.events e "
                f"WHERE e.xid = k.xid AND e.id = k.id{of_tenant} LIMIT 1) AS e"
            )
    cols = _PAYLOAD_SELECT.replace("{e}", "e" if item.tags else "k") if payload else "k.xid, k.id"
    if horizon:
        where.append(f"k.xid < {_HORIZON}")
    if bound is not None:
        op, pos = bound
        args += [pos.commit, pos.index]
        where.append(f"(k.xid, k.id) {op} (${len(args) - 1}, ${len(args)})")
    if item.types:
        args.append(list(item.types))
        where.append(f"{'e' if item.tags else 'k'}.type = ANY(${len(args)}::text[])")
    if len(item.tags) > 1:
        args.append(list(item.tags[1:]))
        where.append(f"string_to_array(e.tags, ' ') @> ${len(args)}::text[]")
    cond = " AND ".join(where) if where else "true"
    return (
        f"SELECT {cols} FROM {source} WHERE {cond} "
        f"ORDER BY k.xid {order}, k.id {order} LIMIT {limit}"
    )


def first_match_sql(s: str, query: Query, after: Position | None) -> tuple[str, list[Any]]:
    """(item, xid, id) of the first event after ``after`` (any when None) ``query`` matches,
    the lowest item it matches: every committed event counts, not only those below the
    horizon (a check runs with the keys locked)."""
    args: list[Any] = []
    bound = None if after is None else (">", after)
    parts = [
        f"(SELECT {n} AS item, f.xid, f.id FROM ("
        + _item_sql(s, item, args, bound, "ASC", "1", horizon=False)
        + ") AS f)"
        for n, item in enumerate(query.items)
    ]
    sql = (
        f"SELECT m.item, m.xid, m.id FROM ({' UNION ALL '.join(parts)}) AS m "
        "ORDER BY m.xid, m.id, m.item LIMIT 1"
    )
    return sql, args


def query_page_sql(
    s: str, cols: str, query: Query, cursor: Position | None, limit: int, backward: bool
) -> tuple[str, list[Any]]:
    """Up to ``limit`` events (``cols`` of ``events e``, then the stream's tenant, domain and
    aggregate id) ``query`` matches after ``cursor`` (before it, newest first, with
    ``backward``), only below the safe horizon."""
    args: list[Any] = [limit]
    order = "DESC" if backward else "ASC"
    keys = _keys_sql(s, query, cursor, backward, args)
    # one index probe per key into events and streams, whatever plan the statement caches (a
    # generic plan made while the tables were small scans them whole, as the log grows)
    sql = (
        f"SELECT {cols}, st.tenant, st.domain, st.aggregate_id FROM ({keys}) AS p "
        f"CROSS JOIN LATERAL (SELECT * FROM {s}.events e WHERE e.xid = p.xid AND e.id = p.id "
        "LIMIT 1) AS e "
        "CROSS JOIN LATERAL (SELECT st.tenant, st.domain, st.aggregate_id "
        f"FROM {s}.streams st WHERE st.id = e.stream_id LIMIT 1) AS st "
        f"ORDER BY e.xid {order}, e.id {order}"
    )
    return sql, args


def _keys_sql(
    s: str, query: Query, cursor: Position | None, backward: bool, args: list[Any]
) -> str:
    """The (xid, id) of up to $1 events ``query`` matches after ``cursor`` (before it with
    ``backward``), below the safe horizon, in order; binds its arguments after $1."""
    order = "DESC" if backward else "ASC"
    bound = None if cursor is None else ("<" if backward else ">", cursor)
    items: Sequence[QueryItem] = query.items
    parts = [f"({_item_sql(s, item, args, bound, order, '$1', horizon=True)})" for item in items]
    if len(parts) == 1:
        return parts[0]
    return (
        f"SELECT m.xid, m.id FROM ({' UNION '.join(parts)}) AS m "
        f"ORDER BY m.xid {order}, m.id {order} LIMIT $1"
    )


#: A payload row: (type, the schema version of a JSON payload or -1, payload, xid, id), as
#: store.QueryPayloadRow; ``{e}`` is the alias of the events table, ``k`` the key table's.
_PAYLOAD_SELECT: Final = (
    "{e}.type AS type, CASE WHEN {e}.content_type IS NULL THEN {e}.schema_version ELSE -1 END "
    "AS v, {e}.payload AS payload, k.xid AS xid, k.id AS id"
)
_PAYLOAD_SQL: dict[tuple[str, tuple[tuple[bool, int], ...], bool, bool], str] = {}


def query_payloads_sql(
    s: str, query: Query, after: Position | None, limit: int, tenant: str | None = None
) -> tuple[str, list[Any]]:
    """Up to ``limit`` payload rows of the events ``query`` matches after ``after`` (of
    ``tenant``), forward, below the safe horizon (as ``query_page_sql`` reads them), with no
    streams, one visit of each event: each item's rows in order, merged without repeats. The
    text depends only on the query's shape, so it is built once per shape."""
    shape = tuple((bool(i.types), len(i.tags)) for i in query.items)
    key = (s, shape, after is None, tenant is None)
    sql = _PAYLOAD_SQL.get(key)
    if sql is not None:
        return sql, _page_args(query, after, limit, tenant)
    args: list[Any] = [limit] if tenant is None else [limit, tenant]
    bound = None if after is None else (">", after)
    ref = "" if tenant is None else "$2"
    parts = [
        _item_sql(s, item, args, bound, "ASC", "$1", horizon=True, payload=True, tenant=ref)
        for item in query.items
    ]
    if len(parts) == 1:
        sql = parts[0]
    else:
        union = " UNION ALL ".join(f"({p})" for p in parts)
        sql = (
            "SELECT DISTINCT ON (m.xid, m.id) m.type, m.v, m.payload, m.xid, m.id "
            f"FROM ({union}) AS m ORDER BY m.xid, m.id LIMIT $1"
        )
    if len(_PAYLOAD_SQL) < 256:  # a few shapes, again and again
        _PAYLOAD_SQL[key] = sql
    return sql, args


def _page_args(query: Query, after: Position | None, limit: int, tenant: str | None) -> list[Any]:
    """The arguments ``query_payloads_sql`` binds, in its order: the limit, the tenant (if
    any), then per item its first tag, the bound, its types, its other tags."""
    args: list[Any] = [limit] if tenant is None else [limit, tenant]
    for item in query.items:
        tags = item.tags
        if tags:
            args.append(tags[0])
        if after is not None:
            args += [after.commit, after.index]
        if item.types:
            args.append(list(item.types))
        if len(tags) > 1:
            args.append(list(tags[1:]))
    return args
