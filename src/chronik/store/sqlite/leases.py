"""Leases on SQLite: the LeaseOps of a unit of work, decided by the database clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from chronik.errors import LeaseHeld
from chronik.store.records import LeaseOp

__all__ = ["write_leases"]

_NOW_US: Final = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
_ACQUIRE: Final = (
    "INSERT INTO chronik_leases (name, partition, owner, epoch, expires_at, version) "
    f"VALUES (?, ?, ?, 1, {_NOW_US} + ?, ?) "
    "ON CONFLICT (name, partition) DO UPDATE SET "
    "epoch = CASE WHEN owner = excluded.owner THEN epoch ELSE epoch + 1 END, "
    "owner = excluded.owner, expires_at = excluded.expires_at, version = excluded.version "
    f"WHERE owner = excluded.owner OR expires_at < {_NOW_US}"
)
_RELEASE: Final = (
    "UPDATE chronik_leases SET expires_at = 0 WHERE name = ? AND partition = ? AND owner = ?"
)


def write_leases(conn: sqlite3.Connection, ops: Sequence[LeaseOp]) -> None:
    """Claim, renew or release leases in the caller's transaction; LeaseHeld (the unit fails)
    when another owner's lease is unexpired."""
    for op in ops:
        if op.op == "release":
            conn.execute(_RELEASE, (op.name, op.partition, op.owner))
            continue
        conn.execute(_ACQUIRE, (op.name, op.partition, op.owner, op.ttl_us, op.version))
        if conn.execute("SELECT changes()").fetchone()[0] == 0:
            raise LeaseHeld(op.name, op.partition, op.owner)
