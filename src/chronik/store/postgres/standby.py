"""The PostgreSQL store on a hot standby: detect it, wait for the schema, watch WAL replay.

A standby (``pg_is_in_recovery()``) takes no writes, no DDL and no LISTEN. The store opened on
one therefore never migrates (it waits, bounded, for the primary's migrations to be replayed),
refuses every write with ``StoreReadOnly`` and, instead of LISTEN, polls
``pg_last_wal_replay_lsn()`` while subscriptions wait: readers are woken only when replay has
moved. Reads stay gap-safe: on a standby ``pg_current_snapshot()`` is built from the
transactions the primary's WAL says are running (every xid the WAL has shown is running until
its commit or abort is replayed), so the safe horizon holds back what it holds back on the
primary.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, NamedTuple

from chronik.adapters import safe_url
from chronik.errors import ConfigurationError, StoreReadOnly
from chronik.store.postgres.schema import SCHEMA_VERSION, schema_version

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "REPLAY_POLL_SECONDS",
    "ReplayLag",
    "in_recovery",
    "read_only",
    "replay_lag",
    "replay_lsn",
    "wait_for_schema",
]

#: How often a store on a standby looks at WAL replay while subscriptions wait (seconds).
REPLAY_POLL_SECONDS: Final = 0.02


class ReplayLag(NamedTuple):
    """How far a standby is behind its primary, as the standby sees it.

    ``seconds``: now minus the commit time of the last transaction replayed (grows while the
    primary is idle too; None before anything was replayed); ``paused``: replay was paused
    (``pg_wal_replay_pause()``); ``lsn``: the last WAL location replayed.
    """

    seconds: float | None
    paused: bool
    lsn: str | None


async def in_recovery(conn: asyncpg.Connection) -> bool:
    """Whether the server is a standby (in recovery)."""
    return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))


async def wait_for_schema(conn: asyncpg.Connection, schema: str, url: str, wait: float) -> None:
    """Return once the standby has replayed the schema at this chronik's version; a standby
    cannot migrate, so ConfigurationError after ``wait`` s (migrate the primary)."""
    deadline = time.monotonic() + wait
    while True:
        found = await schema_version(conn, schema)
        if found == SCHEMA_VERSION:
            return
        if found > SCHEMA_VERSION or time.monotonic() >= deadline:
            raise ConfigurationError(
                f"schema {schema} on the hot standby {safe_url(url)} is at version {found}, "
                f"this chronik needs {SCHEMA_VERSION}: migrate the primary (`chronik db "
                "migrate` or open a store on it) and let the standby replay it"
            )
        await asyncio.sleep(0.05)


def read_only(url: str) -> StoreReadOnly:
    """The error every write to a store on a standby raises."""
    return StoreReadOnly(safe_url(url), "a PostgreSQL hot standby: write to its primary")


async def replay_lsn(conn: asyncpg.Connection) -> str | None:
    """The last WAL location replayed (text), None if nothing was."""
    lsn = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
    return None if lsn is None else str(lsn)


async def replay_lag(conn: asyncpg.Connection) -> ReplayLag:
    """The standby's ReplayLag."""
    row = await conn.fetchrow(
        "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, "
        "pg_get_wal_replay_pause_state() <> 'not paused', pg_last_wal_replay_lsn()::text"
    )
    assert row is not None
    seconds, paused, lsn = row
    return ReplayLag(None if seconds is None else max(0.0, float(seconds)), bool(paused), lsn)
