"""One attempt at writing a unit of work on one connection of the MySQL store.

Plain functions over a connection; the store calls them and nothing here calls back into it.
The order of a unit's transaction (READ COMMITTED), round trips in brackets:

1. [1] ``BEGIN``; lock or create the rows of every stream the unit appends to or expects
   (``INSERT ... ON DUPLICATE KEY UPDATE``, in sorted order: a new stream's row is created
   with version -1, an existing one is X-locked), read their versions and look up the unit's
   event ids (a retry of a committed append answers with its original result).
2. The checks in Python: expectations, ``expect`` s; read-model tables, leases, checkpoints
   (fenced) and snapshots, one statement each.
3. [1, only with DCB conditions] take the position counter's row lock (``SELECT ... FOR
   UPDATE`` on ``log_head``) and check the conditions: no event can be written meanwhile.
4. [1] the tail, one batch: update the streams' versions, take the counter
   (``UPDATE log_head SET last = LAST_INSERT_ID(last + n)``), insert the events at positions
   ``LAST_INSERT_ID() - n + 1 ..`` and their tags, ``COMMIT``, read the counter back.

Writers serialise only from step 3/4 to their commit: the server runs the tail's statements
back to back, with no client round trip while the counter's lock is held.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import asyncmy

from chronik.errors import AppendConditionFailed, WrongExpectedVersion
from chronik.messages import JSON, AppendResult, Position, StreamId
from chronik.store.mysql.dcb import first_match_sql
from chronik.store.mysql.errors import DEADLOCK, code, duplicate_key
from chronik.store.mysql.pool import Result, run
from chronik.store.mysql.side import side_writes
from chronik.store.mysql.tables import write_tables
from chronik.store.records import (
    AppendRequest,
    FaultHook,
    PreparedEvent,
    StoredEvent,
    TableWrite,
    WriteUnit,
    check_expected,
    is_retry,
    match_duplicate,
)

__all__ = [
    "BATCH_BYTES",
    "DUPS_SQL",
    "WriteState",
    "ddl_first",
    "now_us",
    "retry_after",
    "stored_events",
    "write_unit",
]

#: A batch of statements is sent in one packet; one that would grow past this is split (the
#: server's max_allowed_packet is 16 MiB by default). Payloads count twice (escaping).
BATCH_BYTES: Final = 6 * 1024 * 1024
DUPS_SQL: Final = (
    "SELECT e.event_id, e.`type`, e.schema_version, e.payload, e.metadata, e.content_type, "
    "e.tags, s.tenant, s.domain, s.aggregate_id, e.`sequence`, e.`position`, e.recorded_at "
    "FROM events e JOIN streams s ON s.id = e.stream_id WHERE e.event_id IN "
)
_EVENT_COLS: Final = (
    "INSERT INTO events (`position`, stream_id, `sequence`, event_id, `type`, schema_version, "
    "payload, metadata, content_type, recorded_at, tags) VALUES "
)


class WriteState:
    """What the store needs to know about an attempt when it fails: whether the statement
    that commits was sent (a lost connection then leaves the outcome unknown)."""

    def __init__(self) -> None:
        self.committing = False


def now_us() -> int:
    """The current time in microseconds (recorded_at)."""
    return time.time_ns() // 1000


def ddl_first(tables: Sequence[TableWrite]) -> tuple[list[TableWrite], list[TableWrite]]:
    """The unit's DDL (``ensure``, ``drop``: run before its transaction, as MySQL commits
    around DDL) and its row writes (run inside it), each in the unit's order."""
    ddl = [w for w in tables if w.op in ("ensure", "drop")]
    return ddl, [w for w in tables if w.op not in ("ensure", "drop")]


def _stream_key(st: StreamId) -> tuple[str, str, str]:
    return (st.tenant, st.domain, st.aggregate_id)


async def write_unit(
    conn: asyncmy.Connection,
    unit: WriteUnit,
    state: WriteState,
    hook: FaultHook | None = None,
) -> list[AppendResult]:
    """Write ``unit`` in one transaction on ``conn``. Raises a ChronikError when a check
    fails, or the driver's error (``retry_after`` says whether the unit may run again); the
    caller rolls back or drops the connection."""
    now = now_us()
    appends = unit.appends
    if hook is not None:
        hook("begin", unit)
    ddl, rows = ddl_first(unit.tables)
    if ddl:
        await write_tables(conn, ddl)
    pending = list(range(len(appends)))
    keys = sorted(
        {_stream_key(appends[i].stream) for i in pending}
        | {_stream_key(c.stream) for c in unit.expects}
    )
    ids = [e.event_id for i in pending for e in appends[i].events]
    ids += [i for c in unit.conditions for i in c.event_ids if i not in ids]
    sql, args = ["BEGIN"], []
    if keys:
        sql.append(
            "INSERT INTO streams (tenant, domain, aggregate_id, version) VALUES "
            + ", ".join(["(%s, %s, %s, -1)"] * len(keys))
            + " ON DUPLICATE KEY UPDATE version = version"
        )
        args += [v for k in keys for v in k]
        sql.append(
            "SELECT id, tenant, domain, aggregate_id, version FROM streams WHERE "
            + " OR ".join(["(tenant = %s AND domain = %s AND aggregate_id = %s)"] * len(keys))
        )
        args += [v for k in keys for v in k]
    if ids:
        sql.append(DUPS_SQL + "(" + ", ".join(["%s"] * len(ids)) + ")")
        args += ids
    results = await run(conn, "; ".join(sql), args)
    streams: dict[tuple[str, str, str], tuple[int, int]] = {}
    stored: dict[str, StoredEvent] = {}
    at = 3 if keys else 1
    if keys:
        for sid, tenant, domain, aggregate_id, version in results[2].rows or ():
            streams[(tenant, domain, aggregate_id)] = (int(sid), int(version))
    if ids:
        stored = stored_events(results[at])
    known = stored.__contains__

    # --- the checks ----------------------------------------------------------------------
    for check in unit.expects:
        if not is_retry(check.event_ids, known):
            version = streams[_stream_key(check.stream)][1]
            actual = None if version < 0 else version
            if not check_expected(check.expected, actual):
                raise WrongExpectedVersion(check.stream, check.expected, actual)
    versions = {k: v for k, (_, v) in streams.items()}
    plan: dict[int, int] = {}  # append index -> its first sequence
    done: dict[int, AppendResult] = {}
    for i in pending:
        req = appends[i]
        dup = [stored[e.event_id] for e in req.events if e.event_id in stored]
        if dup:  # a retry of a committed append: its original result (or DuplicateEventError)
            done[i] = match_duplicate(req, dup)
            continue
        if hook is not None:
            hook("append", unit)
        key = _stream_key(req.stream)
        version = versions[key]
        actual = None if version < 0 else version
        if not check_expected(req.expected, actual):
            raise WrongExpectedVersion(req.stream, req.expected, actual)
        plan[i] = version + 1
        versions[key] = version + len(req.events)
    await side_writes(conn, unit, rows, now, hook)

    # --- the tail: conditions, positions, events, commit ---------------------------------
    conditions = [c for c in unit.conditions if not is_retry(c.event_ids, known)]
    if conditions and plan:
        if hook is not None:
            hook("lock", unit)
        checks = ["SELECT `last` FROM log_head WHERE id = 1 FOR UPDATE"]
        cargs: list[Any] = []
        for cond in conditions:
            s, a = first_match_sql(cond.query, cond.after)
            checks.append(s)
            cargs += a
        found = await run(conn, "; ".join(checks), cargs)
        for cond, match in zip(conditions, found[1:], strict=True):
            if match.rows:
                item, pos = match.rows[0]
                raise AppendConditionFailed(int(item), Position(int(pos)), str(cond.query))
    elif conditions:  # nothing of the unit to write: its conditions still must hold
        for cond in conditions:
            s, a = first_match_sql(cond.query, cond.after)
            match = (await run(conn, s, a))[0]
            if match.rows:
                item, pos = match.rows[0]
                raise AppendConditionFailed(int(item), Position(int(pos)), str(cond.query))
    count = sum(len(appends[i].events) for i in plan)
    batches = _tail(appends, plan, streams, versions, count, now)
    commit = "COMMIT; SELECT LAST_INSERT_ID()" if count else "COMMIT"
    if hook is None:  # the commit rides with the tail: no round trip while the lock is held
        if batches:
            text, targs = batches[-1]
            batches[-1] = (f"{text}; {commit}", targs)
        else:
            batches = [(commit, [])]
    out: list[Result] = []
    for n, (text, targs) in enumerate(batches):
        state.committing = hook is None and n == len(batches) - 1
        out = await run(conn, text, targs)
    if hook is not None:
        hook("commit", unit)
        state.committing = True
        out = await run(conn, commit)
    base = int((out[-1].rows or [(0,)])[0][0]) - count if count else 0
    return _results(appends, plan, done, base, now)


def stored_events(res: Result) -> dict[str, StoredEvent]:
    """The events of a DUPS_SQL result by id, as ``match_duplicate`` compares them."""
    out: dict[str, StoredEvent] = {}
    for eid, etype, ver, payload, md, ct, tags, tenant, domain, agg, seq, pos, at in res.rows or ():
        old = PreparedEvent(
            eid,
            etype,
            ver,
            bytes(payload),
            None if md is None else bytes(md),
            ct or JSON,
            tuple(tags.split(" ")) if tags else (),
        )
        out[eid] = StoredEvent(old, StreamId(domain, agg, tenant), seq, Position(pos), at)
    return out


def _tail(
    appends: Sequence[AppendRequest],
    plan: dict[int, int],
    streams: dict[tuple[str, str, str], tuple[int, int]],
    versions: dict[tuple[str, str, str], int],
    count: int,
    now: int,
) -> list[tuple[str, list[Any]]]:
    """The tail's statements (without COMMIT), grouped into batches of at most BATCH_BYTES:
    the streams' new versions, the counter, the events at their positions, their tags."""
    if not count:
        return []
    head: list[str] = []
    hargs: list[Any] = []
    for key, (sid, old) in streams.items():
        if versions[key] != old:
            head.append("UPDATE streams SET version = %s WHERE id = %s")
            hargs += [versions[key], sid]
    head.append(f"UPDATE log_head SET `last` = LAST_INSERT_ID(`last` + {count}) WHERE id = 1")
    statements: list[tuple[str, list[Any], int]] = [("; ".join(head), hargs, 0)]
    rows: list[str] = []
    rargs: list[Any] = []
    tags: list[str] = []
    targs: list[Any] = []
    size = 0
    k = 0
    for i, first in plan.items():
        req = appends[i]
        sid = streams[_stream_key(req.stream)][0]
        for n, e in enumerate(req.events):
            k += 1
            pos = f"LAST_INSERT_ID() - {count - k}"
            rows.append(f"({pos}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
            rargs += [
                sid,
                first + n,
                e.event_id,
                e.type,
                e.schema_version,
                e.payload,
                e.metadata,
                None if e.content_type == JSON else e.content_type,
                now,
                " ".join(e.tags) or None,
            ]
            size += 2 * (len(e.payload) + len(e.metadata or b"")) + 200
            for tag in e.tags:
                tags.append(f"(%s, {pos})")
                targs.append(tag)
            if size > BATCH_BYTES // 2 or len(rows) >= 1000:
                statements.append((_EVENT_COLS + ", ".join(rows), rargs, size))
                rows, rargs, size = [], [], 0
    if rows:
        statements.append((_EVENT_COLS + ", ".join(rows), rargs, size))
    for j in range(0, len(tags), 2000):
        statements.append(
            (
                "INSERT INTO event_tags (tag, `position`) VALUES " + ", ".join(tags[j : j + 2000]),
                targs[j : j + 2000],
                0,
            )
        )
    batches: list[tuple[str, list[Any]]] = []
    text: list[str] = []
    bargs: list[Any] = []
    total = 0
    for sql, args, n in statements:
        if text and total + n > BATCH_BYTES:
            batches.append(("; ".join(text), bargs))
            text, bargs, total = [], [], 0
        text.append(sql)
        bargs += args
        total += n
    batches.append(("; ".join(text), bargs))
    return batches


def _results(
    appends: Sequence[AppendRequest],
    plan: dict[int, int],
    done: dict[int, AppendResult],
    base: int,
    now: int,
) -> list[AppendResult]:
    out: list[AppendResult] = []
    k = base
    for i, req in enumerate(appends):
        if i in done:
            out.append(done[i])
            continue
        first = plan[i]
        positions = tuple(Position(k + n + 1) for n in range(len(req.events)))
        k += len(req.events)
        out.append(
            AppendResult(
                req.stream, first, first + len(req.events) - 1, positions[-1], positions, now
            )
        )
    return out


def retry_after(exc: BaseException) -> bool:
    """Whether the unit runs again after ``exc``: a deadlock (InnoDB rolled the transaction
    back) or a racing writer that stored one of the unit's event ids first."""
    return code(exc) == DEADLOCK or duplicate_key(exc, "events_event_id")
