"""A lone stream append in one round trip: the common unit (``store.append``, one
unconditional ``append_tagged`` event) without a client round trip inside its transaction.

The same steps as ``write``, decided by the server in one batch of statements: lock or create
the stream's row, read its version into a session variable, apply the expectation (and the
"none of these ids is stored" rule) as the WHERE of the version update, and let that update's
row count (``@chronik_ok``) gate the rest: the position counter, the events, their tags. A
stream row created for an append that did not happen is deleted again. The batch ends with
COMMIT and a SELECT of what happened, so the counter's lock is held exactly as in ``write``:
from its update to the commit, with the server running the statements back to back.

``@chronik_*`` are session variables, reset at the start of every batch (connections are
pooled). A refused append commits nothing; a second round trip then looks its event ids up:
the original result of a retry (``match_duplicate``), else WrongExpectedVersion.

One round trip instead of ``write``'s two halves the latency of the most common write on a
real network; on loopback the server's statements cost about as much as the round trip.
"""

from __future__ import annotations

from typing import Any, Final

import asyncmy

from chronik.errors import WrongExpectedVersion
from chronik.messages import ANY, JSON, NO_STREAM, STREAM_EXISTS, AppendResult, Position
from chronik.store.mysql.pool import run
from chronik.store.mysql.write import (
    BATCH_BYTES,
    DUPS_SQL,
    WriteState,
    now_us,
    stored_events,
)
from chronik.store.records import AppendRequest, WriteUnit, match_duplicate

__all__ = ["append_one", "one_round_trip"]

_EXPECT: Final = {ANY: "TRUE", NO_STREAM: "@chronik_v < 0", STREAM_EXISTS: "@chronik_v >= 0"}
_EVENT: Final = (
    "INSERT INTO events (`position`, stream_id, `sequence`, event_id, `type`, schema_version, "
    "payload, metadata, content_type, recorded_at, tags) SELECT LAST_INSERT_ID() - {back}, "
    "@chronik_sid, @chronik_v + {seq}, %s, %s, %s, %s, %s, %s, %s, %s FROM DUAL "
    "WHERE @chronik_ok = 1"
)


def one_round_trip(unit: WriteUnit) -> bool:
    """Whether ``unit`` is a lone append with nothing beside it, small enough for one batch."""
    return (
        len(unit.appends) == 1
        and not (
            unit.checkpoints
            or unit.snapshots
            or unit.tables
            or unit.leases
            or unit.conditions
            or unit.expects
        )
        and sum(len(e.payload) + len(e.metadata or b"") for e in unit.appends[0].events)
        < BATCH_BYTES // 4
    )


def _batch(req: AppendRequest, now: int) -> tuple[str, list[Any]]:
    st, events = req.stream, req.events
    n = len(events)
    expected = req.expected
    rule = _EXPECT[expected] if not isinstance(expected, int) else f"@chronik_v = {int(expected)}"
    ids = [e.event_id for e in events]
    marks = ", ".join(["%s"] * n)
    key = (st.tenant, st.domain, st.aggregate_id)
    sql = [
        "BEGIN",
        "SET @chronik_sid = NULL, @chronik_v = NULL, @chronik_ok = 0",
        "INSERT INTO streams (tenant, domain, aggregate_id, version) VALUES (%s, %s, %s, -1) "
        "ON DUPLICATE KEY UPDATE version = version",
        "SELECT id, version FROM streams WHERE tenant = %s AND domain = %s AND aggregate_id = %s "
        "INTO @chronik_sid, @chronik_v",
        f"UPDATE streams SET version = @chronik_v + {n} WHERE id = @chronik_sid AND ({rule}) "
        f"AND NOT EXISTS (SELECT 1 FROM events WHERE event_id IN ({marks}))",
        "SET @chronik_ok = ROW_COUNT()",
        "DELETE FROM streams WHERE id = @chronik_sid AND version = -1 AND @chronik_ok = 0",
        f"UPDATE log_head SET `last` = LAST_INSERT_ID(`last` + {n}) "
        "WHERE id = 1 AND @chronik_ok = 1",
    ]
    args: list[Any] = [*key, *key, *ids]
    for k, e in enumerate(events):
        sql.append(_EVENT.format(back=n - 1 - k, seq=k + 1))
        args += [
            e.event_id,
            e.type,
            e.schema_version,
            e.payload,
            e.metadata,
            None if e.content_type == JSON else e.content_type,
            now,
            " ".join(e.tags) or None,
        ]
        if e.tags:
            tags = " UNION ALL ".join(["SELECT %s AS tag"] * len(e.tags))
            sql.append(
                f"INSERT INTO event_tags (tag, `position`) SELECT t.tag, "
                f"LAST_INSERT_ID() - {n - 1 - k} FROM ({tags}) AS t WHERE @chronik_ok = 1"
            )
            args += e.tags
    sql += ["COMMIT", "SELECT @chronik_ok, @chronik_v, LAST_INSERT_ID()"]
    return "; ".join(sql), args


async def append_one(
    conn: asyncmy.Connection, req: AppendRequest, state: WriteState
) -> AppendResult:
    """Write one append in one round trip; WrongExpectedVersion (nothing written) when the
    stream is not as expected, the original result when its events are stored already."""
    now = now_us()
    sql, args = _batch(req, now)
    ids = [e.event_id for e in req.events]
    state.committing = True
    results = await run(conn, sql, args)
    ok, version, last = (results[-1].rows or [(0, None, 0)])[0]
    if ok:
        n = len(req.events)
        first = int(version) + 1
        base = int(last) - n
        positions = tuple(Position(base + k + 1) for k in range(n))
        return AppendResult(req.stream, first, first + n - 1, positions[-1], positions, now)
    found = await run(conn, f"{DUPS_SQL}({', '.join(['%s'] * len(req.events))})", ids)
    stored = stored_events(found[0])
    if stored:
        return match_duplicate(
            req, [stored[e.event_id] for e in req.events if e.event_id in stored]
        )
    actual = None if version is None or int(version) < 0 else int(version)
    raise WrongExpectedVersion(req.stream, req.expected, actual)
