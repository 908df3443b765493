"""Leases on PostgreSQL: the LeaseOps of a unit of work, by the database clock.

The ``chronik_leases`` table comes from the schema's migrations (``chronik.store.postgres.schema``);
nothing is created here. See ``chronik.store.leases`` for what a lease means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from chronik.errors import LeaseHeld
from chronik.store.records import LeaseOp

__all__ = ["write_leases"]

_NOW_US: Final = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
_ACQUIRE: Final = (
    "INSERT INTO {s}.chronik_leases AS l (name, partition, owner, epoch, expires_at, version) "
    f"VALUES ($1, $2, $3, 1, {_NOW_US} + $4, $5) "
    "ON CONFLICT (name, partition) DO UPDATE SET "
    "epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END, "
    "owner = excluded.owner, expires_at = excluded.expires_at, version = excluded.version "
    f"WHERE l.owner = excluded.owner OR l.expires_at < {_NOW_US} RETURNING 1"
)
_RELEASE: Final = (
    "UPDATE {s}.chronik_leases SET expires_at = 0 WHERE name = $1 AND partition = $2 AND owner = $3"
)


async def write_leases(conn: asyncpg.Connection, s: str, ops: Sequence[LeaseOp]) -> None:
    """Claim, renew or release leases in the caller's transaction (``s``: the quoted schema);
    LeaseHeld (the unit fails) when another owner's lease is unexpired."""
    for op in ops:
        if op.op == "release":
            await conn.execute(_RELEASE.format(s=s), op.name, op.partition, op.owner)
            continue
        sql = _ACQUIRE.format(s=s)
        if await conn.fetchval(sql, op.name, op.partition, op.owner, op.ttl_us, op.version) is None:
            raise LeaseHeld(op.name, op.partition, op.owner)
