"""Leases in the database: one owner per (projection, partition), by the database's clock.

A ``lease`` write claims or renews a lease inside a unit of work and fails the whole unit
(LeaseHeld) while another owner's lease is unexpired; the epoch grows each time the owner
changes, and processors write their checkpoints with it, so an owner that lost its lease can
never commit a batch again.
"""

from __future__ import annotations

from chronik.errors import LeaseHeld
from chronik.store.base import EventStore, TableWrite
from chronik.store.tables import LEASES

__all__ = ["acquire", "write"]


def write(name: str, owner: str, ttl: float, op: str = "lease", partition: int = 0) -> TableWrite:
    """The write that claims / renews (``lease``) or gives up (``release``) a lease."""
    if op == "release":
        return TableWrite(
            "release", LEASES.name, ("name", "partition", "owner"), (name, partition, owner)
        )
    return TableWrite(
        "lease",
        LEASES.name,
        ("name", "partition", "owner", "ttl_us"),
        (name, partition, owner, int(ttl * 1_000_000)),
    )


async def acquire(
    store: EventStore, name: str, owner: str, ttl: float, partition: int = 0
) -> int | None:
    """Claim or renew the lease; its epoch, or None while another owner holds it."""
    claim = write(name, owner, ttl, partition=partition)
    try:  # the table is the store's (created by its migrations): nothing is created here
        async with store.transaction() as tx:
            tx.write_tables([claim], checked=True)
    except LeaseHeld:
        return None
    found = await store.read_table(LEASES.name, {"name": name, "partition": partition}, limit=1)
    epoch: int = found[0]["epoch"]
    return epoch
