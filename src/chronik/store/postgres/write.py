"""One attempt at writing a unit of work on one connection of the PostgreSQL store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from chronik.errors import CheckpointFenced, WrongExpectedVersion
from chronik.messages import AppendResult
from chronik.store.base import WriteUnit
from chronik.store.postgres.tables import write_tables

if TYPE_CHECKING:
    from chronik.store.postgres.store import PostgresEventStore

__all__ = ["Retry", "write_unit"]

EVENT_ID_KEY = "events_event_id_key"


class Retry(Exception):
    """The unit must run again (a racing duplicate id, a deadlock); nothing was written."""

    def __init__(self, resolved: dict[int, AppendResult] | None = None) -> None:
        self.resolved = resolved


async def write_unit(
    store: PostgresEventStore,
    conn: asyncpg.Connection,
    unit: WriteUnit,
    resolved: dict[int, AppendResult],
) -> list[AppendResult]:
    """Write ``unit``; ``resolved`` holds appends already known to be stored (retries).

    A lone append runs in autocommit: one round trip. Raises ``Retry`` when the unit must run
    again (an event id stored concurrently, a deadlock); nothing was written then.
    """
    now = store.now_us()
    appends = unit.appends
    hook = store.fault_hook
    if hook is not None:
        hook("begin", unit)
    try:
        if len(appends) == 1 and not unit.checkpoints and not unit.snapshots and not unit.tables:
            if 0 in resolved:
                return [resolved[0]]
            if hook is not None:
                hook("append", unit)
            return [await store.append_on(conn, appends[0], now)]
        async with conn.transaction():
            # Lock every stream first, in one global order: no deadlocks between units, and
            # the transaction takes its id (its position) only once it holds them all.
            keys = [
                f"{r.stream.tenant}/{r.stream.domain}/{r.stream.aggregate_id}"
                for i, r in enumerate(appends)
                if i not in resolved
            ]
            if keys:
                if hook is not None:
                    hook("lock", unit)
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, k) FROM (SELECT DISTINCT hashtext(x) AS k "
                    "FROM unnest($2::text[]) AS x ORDER BY 1) AS keys",
                    store.lock_class,
                    keys,
                )
            await _write_side_tables(store, conn, unit, now)
            results = []
            for i, req in enumerate(appends):
                if i in resolved:
                    results.append(resolved[i])
                else:
                    if hook is not None:
                        hook("append", unit)
                    results.append(await store.append_on(conn, req, now))
            if hook is not None:
                hook("commit", unit)
            return results
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == EVENT_ID_KEY:
            # Another transaction stored one of these ids since we looked: see which.
            pending = [r for i, r in enumerate(appends) if i not in resolved]
            index = [i for i in range(len(appends)) if i not in resolved]
            dups = await store.find_duplicate(conn, pending)
            merged = dict(resolved)
            merged.update({index[k]: v for k, v in dups.items()})
            raise Retry(merged) from exc
        # (stream, sequence) taken: another writer got there first.
        req = appends[0]
        actual = await conn.fetchval(
            f"SELECT version FROM {store._s}.streams WHERE tenant = $1 AND domain = $2 "
            "AND aggregate_id = $3",
            req.stream.tenant,
            req.stream.domain,
            req.stream.aggregate_id,
        )
        found = None if actual is None or actual < 0 else int(actual)
        raise WrongExpectedVersion(req.stream, req.expected, found) from exc
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        raise Retry() from exc


async def _write_side_tables(
    store: PostgresEventStore, conn: asyncpg.Connection, unit: WriteUnit, now: int
) -> None:
    s = store._s
    hook = store.fault_hook
    if unit.tables:  # read-model writes and leases, in the same transaction
        if hook is not None:
            hook("tables", unit)
        await write_tables(conn, s, unit.tables)
    if hook is not None and unit.checkpoints:
        hook("checkpoint", unit)
    for cp in unit.checkpoints:
        done = await conn.fetchval(
            f"INSERT INTO {s}.checkpoints AS c (name, partition, commit_pos, index_pos, epoch, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, partition) DO UPDATE "
            "SET commit_pos = excluded.commit_pos, index_pos = excluded.index_pos, "
            "epoch = excluded.epoch, updated_at = excluded.updated_at "
            "WHERE c.epoch <= excluded.epoch RETURNING 1",
            cp.name,
            cp.partition,
            cp.position.commit,
            cp.position.index,
            cp.epoch,
            now,
        )
        if done is None:
            stored = await conn.fetchval(
                f"SELECT epoch FROM {s}.checkpoints WHERE name = $1 AND partition = $2",
                cp.name,
                cp.partition,
            )
            raise CheckpointFenced(cp.name, cp.partition, cp.epoch, int(stored))
    if hook is not None and unit.snapshots:
        hook("snapshot", unit)
    for snap in unit.snapshots:
        st = snap.stream
        await conn.execute(
            f"INSERT INTO {s}.snapshots AS x (tenant, domain, aggregate_id, sequence, type, "
            "schema_version, state, taken_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
            "sequence = excluded.sequence, type = excluded.type, "
            "schema_version = excluded.schema_version, state = excluded.state, "
            "taken_at = excluded.taken_at WHERE excluded.sequence >= x.sequence",
            st.tenant,
            st.domain,
            st.aggregate_id,
            snap.sequence,
            snap.type,
            snap.schema_version,
            snap.state,
            snap.taken_at_us,
        )
