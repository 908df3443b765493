"""One attempt at writing a unit of work on one connection of the PostgreSQL store.

Plain functions over a connection and the schema's prepared statements (``Statements``); the
store calls them and nothing here calls back into the store.
"""

from __future__ import annotations

import time
from typing import Final

import asyncpg

from chronik.errors import (
    AppendConditionFailed,
    CheckpointFenced,
    StreamDeleted,
    WrongExpectedVersion,
)
from chronik.messages import JSON, AppendResult, Position, StreamId
from chronik.store.base import (
    AppendRequest,
    ConditionCheck,
    FaultHook,
    PreparedEvent,
    StoredEvent,
    WriteUnit,
    match_duplicate,
)
from chronik.store.postgres.dcb import check_unit, one_statement, tagged_call, tagged_run
from chronik.store.postgres.deletion import apply_delete
from chronik.store.postgres.leases import write_leases
from chronik.store.postgres.locks import LOCK_SQL, unit_locks
from chronik.store.postgres.statements import Statements, append_call
from chronik.store.postgres.tables import write_tables

__all__ = [
    "Retry",
    "Statements",
    "append_call",
    "append_on",
    "append_tagged_on",
    "now_us",
    "write_unit",
]

EVENT_ID_KEY: Final = "events_event_id_key"


class Retry(Exception):
    """The unit must run again (a racing duplicate id, a deadlock); nothing was written."""

    def __init__(self, resolved: dict[int, AppendResult] | None = None) -> None:
        self.resolved = resolved


def now_us() -> int:
    """The current time in microseconds (recorded_at)."""
    return time.time_ns() // 1000


async def write_unit(
    conn: asyncpg.Connection,
    sql: Statements,
    unit: WriteUnit,
    resolved: dict[int, AppendResult],
    hook: FaultHook | None = None,
) -> list[AppendResult]:
    """Write ``unit``; ``resolved`` holds appends already known to be stored (retries).

    A lone append without checks runs in autocommit: one round trip; so does a tagged append
    with at most one condition (``dcb.one_statement``: the ``append_tagged`` function). Otherwise
    every lock the unit needs (streams, DCB keys) is taken first in one global order, then its
    checks run (``dcb.check_unit``), then its writes. Raises ``Retry`` when the unit must run
    again (an event id stored concurrently, a deadlock); nothing was written then.
    """
    now = now_us()
    appends = unit.appends
    if hook is not None:
        hook("begin", unit)
    try:
        side = (
            unit.checkpoints
            or unit.snapshots
            or unit.tables
            or unit.leases
            or unit.conditions
            or unit.expects
            or unit.deletes
        )
        if len(appends) == 1 and not side:
            if 0 in resolved:
                return [resolved[0]]
            if hook is not None:
                hook("append", unit)
            return [await append_on(conn, sql, appends[0], now)]
        if one_statement(unit, resolved):
            if hook is not None:
                hook("append", unit)
            cond = unit.conditions[0] if unit.conditions else None
            done = await append_tagged_on(conn, sql, appends, cond, now)
            if done is not None:
                return done
            # An event or a stream is stored already: a retry (its original results), else
            # the transaction path sorts it out with what is resolved.
            dups = await find_duplicate(conn, sql, appends)
            if len(dups) == len(appends):
                return [dups[i] for i in range(len(appends))]
            resolved = dups
        async with conn.transaction():
            # Take every lock first, in one global order: no deadlocks between units, and
            # the transaction takes its id (its position) only once it holds them all.
            classes, keys, exclusive = unit_locks(
                unit, resolved, sql.lock_class, sql.dcb_lock_class
            )
            if keys:
                if hook is not None:
                    hook("lock", unit)
                await conn.execute(LOCK_SQL, classes, keys, exclusive)
            if unit.conditions or unit.expects:
                await check_unit(conn, sql.s, sql.version, unit)
            await _write_side_tables(conn, sql, unit, now, hook)
            results = await _append_all(conn, sql, unit, resolved, now, hook)
            if hook is not None:
                hook("commit", unit)
            return results
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == EVENT_ID_KEY:
            # Another transaction stored one of these ids since we looked: see which.
            pending = [r for i, r in enumerate(appends) if i not in resolved]
            index = [i for i in range(len(appends)) if i not in resolved]
            dups = await find_duplicate(conn, sql, pending)
            merged = dict(resolved)
            merged.update({index[k]: v for k, v in dups.items()})
            raise Retry(merged) from exc
        # (stream, sequence) taken: another writer got there first.
        st = appends[0].stream
        actual = await conn.fetchval(sql.version, st.tenant, st.domain, st.aggregate_id)
        found = None if actual is None or actual < 0 else int(actual)
        raise WrongExpectedVersion(st, appends[0].expected, found) from exc
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        raise Retry() from exc


async def _append_all(
    conn: asyncpg.Connection,
    sql: Statements,
    unit: WriteUnit,
    resolved: dict[int, AppendResult],
    now: int,
    hook: FaultHook | None,
) -> list[AppendResult]:
    """Run the unit's appends in its transaction, a run of tagged requests in one call."""
    appends = unit.appends
    results: list[AppendResult] = []
    deleting = {d.append: d.hard for d in unit.deletes}
    i = 0
    while i < len(appends):
        if i in resolved:
            results.append(resolved[i])
            i += 1
            continue
        end = tagged_run(appends, i, resolved)
        if hook is not None:
            hook("append", unit)
        if end - i > 1:
            done = await append_tagged_on(conn, sql, appends[i:end], None, now)
            if done is not None:
                results.extend(done)
                i = end
                continue
            # one of them is stored already (nothing written): one by one, as for streams
            for req in appends[i : end - 1]:
                results.append(await append_on(conn, sql, req, now))
            i = end - 1
        results.append(await append_on(conn, sql, appends[i], now))
        if i in deleting:
            await apply_delete(conn, sql.s, results[-1], deleting[i])
        i += 1
    return results


async def append_tagged_on(
    conn: asyncpg.Connection,
    sql: Statements,
    requests: list[AppendRequest],
    cond: ConditionCheck | None,
    now: int,
) -> list[AppendResult] | None:
    """Run the ``append_tagged`` function for a run of tagged ``requests`` (dcb.tagged_run)
    and at most one condition: their results, or None when an event or a stream of them is
    stored already (nothing written); raises AppendConditionFailed."""
    classes = (sql.lock_class, sql.dcb_lock_class)
    statement, args = tagged_call(sql.s, sql.append_tagged, requests, cond, now, classes)
    status, item, xid, ids = await conn.fetchrow(statement, *args)
    if status == 0:
        return [
            AppendResult(r.stream, 0, 0, p, (p,), now)
            for r, p in zip(requests, [Position(xid, i) for i in ids], strict=True)
        ]
    if status == 1 and cond is not None:
        raise AppendConditionFailed(item, Position(xid, ids[0]), str(cond.query))
    return None


async def append_on(
    conn: asyncpg.Connection, sql: Statements, req: AppendRequest, now: int
) -> AppendResult:
    """Run the append function for one request on ``conn`` (in a transaction or not)."""
    statement, args = append_call(sql, req, now)
    status, actual, xid, ids = await conn.fetchrow(statement, *args)
    if status == 0:
        first = 0 if actual is None else actual + 1
        if type(ids) is int:
            pos = Position(xid, ids)
            return AppendResult(req.stream, first, first, pos, (pos,), now)
        positions = tuple([Position(xid, i) for i in ids])
        return AppendResult(
            req.stream, first, first + len(req.events) - 1, positions[-1], positions, now
        )
    if status == 2:
        raise StreamDeleted(req.stream)
    dup = await find_duplicate(conn, sql, [req])
    if 0 in dup:
        return dup[0]
    raise WrongExpectedVersion(req.stream, req.expected, actual)


async def find_duplicate(
    conn: asyncpg.Connection, sql: Statements, requests: list[AppendRequest]
) -> dict[int, AppendResult]:
    """The original results of requests whose event ids are stored (DuplicateEventError
    if one only partly matches), by index in ``requests``."""
    ids = [e.event_id for r in requests for e in r.events]
    rows = await conn.fetch(sql.duplicates, ids)
    by_id = {r[0]: r for r in rows}
    out: dict[int, AppendResult] = {}
    for i, req in enumerate(requests):
        stored = []
        for e in req.events:
            r = by_id.get(e.event_id)
            if r is not None:
                tags = tuple(r[13].split(" ")) if r[13] else ()
                old = PreparedEvent(r[0], r[1], r[2], r[3], r[4], r[5] or JSON, tags)
                stream = StreamId(r[7], r[8], r[6])
                stored.append(StoredEvent(old, stream, r[9], Position(r[10], r[11]), r[12]))
        if stored:
            out[i] = match_duplicate(req, stored)
    return out


async def _write_side_tables(
    conn: asyncpg.Connection, sql: Statements, unit: WriteUnit, now: int, hook: FaultHook | None
) -> None:
    if unit.tables or unit.leases:  # read-model writes and leases, in the same transaction
        if hook is not None:
            hook("tables", unit)
        await write_tables(conn, sql.s, unit.tables)
        await write_leases(conn, sql.s, unit.leases)
    if hook is not None and unit.checkpoints:
        hook("checkpoint", unit)
    for cp in unit.checkpoints:
        done = await conn.fetchval(
            sql.checkpoint,
            cp.name,
            cp.partition,
            cp.position.commit,
            cp.position.index,
            cp.epoch,
            now,
        )
        if done is None:
            stored = await conn.fetchval(sql.checkpoint_epoch, cp.name, cp.partition)
            raise CheckpointFenced(cp.name, cp.partition, cp.epoch, int(stored))
    if hook is not None and unit.snapshots:
        hook("snapshot", unit)
    for snap in unit.snapshots:
        st = snap.stream
        await conn.execute(
            sql.snapshot,
            st.tenant,
            st.domain,
            st.aggregate_id,
            snap.sequence,
            snap.type,
            snap.schema_version,
            snap.state,
            snap.taken_at_us,
        )
