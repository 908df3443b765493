"""The sweep of durable aggregate locks: rows of released and expired locks are deleted.

Each aggregate that ever took a durable lock (``chronik.aggregate_locks``) leaves a row in
``chronik_leases``; released and expired ones would accumulate forever. ``sweep_locks(store)``
deletes those expired for longer than ``grace`` seconds (released ones count as expired long
ago), and ``LockSweeper`` does it every ``interval`` seconds: ``Chronik`` runs one as the
background task ``aggregate lock sweeper`` of ``app.health`` when any domain opted in.

A delete must never remove a lease someone acquired after the sweep read it as expired. So a
row is deleted in two units of work, each decided by the database:

1. *claim*: the sweeper acquires the expired leases itself (a fresh owner, a short ``hold``);
   a lease acquired meanwhile by anyone else is unexpired, so the claim of that row fails
   (LeaseHeld) and the row is skipped;
2. *delete*: the rows are deleted where the owner is still the sweeper's (a table delete
   conditioned on name, partition and owner; nobody else can take a lease the sweeper holds
   unexpired). If the claim is older than half its ``hold`` when the delete would start, the
   claims are released instead: a row is never deleted on a hold that may have lapsed.

A sweeper that dies between the two steps leaves claims that expire after ``hold`` seconds:
commands on those (idle) aggregates wait at most that long. Several sweepers may run at once
(one per process): each claim is a lease, so they never delete each other's or anyone's
live lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from chronik.aggregate_locks import LOCK_NAME, new_owner
from chronik.errors import ConfigurationError, LeaseHeld
from chronik.store.system_tables import LEASES
from chronik.store.tables import Range, TableWrite

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["Claim", "LockSweeper", "claim", "delete_claimed", "find_expired", "sweep_locks"]

log = logging.getLogger("chronik.locks")

GRACE: Final = 60.0  # seconds a lock row stays after its lease ended
INTERVAL: Final = 60.0  # seconds between two sweeps of a LockSweeper
HOLD: Final = 10.0  # seconds the sweeper's own claim lasts
BATCH: Final = 200  # rows per claim / delete


class Claim(NamedTuple):
    """Lock rows the sweeper holds as ``owner`` since ``at`` (monotonic), for ``hold`` s."""

    owner: str
    partitions: tuple[int, ...]
    at: float
    hold: float


def _check(value: float, what: str, low: float = 0.0) -> float:
    if type(value) not in (int, float) or not low <= value < float("inf"):
        raise ConfigurationError(f"{what} must be a number of seconds >= {low:g}, not {value!r}")
    return value


async def find_expired(store: EventStore, grace: float = GRACE, limit: int = BATCH) -> list[int]:
    """Partitions of lock rows whose lease ended more than ``grace`` s ago (by this machine's
    clock; the claim re-checks expiry by the database's), at most ``limit``."""
    _check(grace, "grace")
    cutoff = time.time_ns() // 1000 - int(grace * 1_000_000)
    rows = await store.read_table(
        LEASES.name,
        {"name": LOCK_NAME, "expires_at": Range(lt=cutoff)},
        ("name", "partition"),
        limit,
    )
    return [int(r["partition"]) for r in rows]


async def _claim_all(store: EventStore, owner: str, partitions: Sequence[int], hold: float) -> None:
    async with store.transaction() as tx:
        for partition in partitions:
            tx.acquire_lease(LOCK_NAME, owner, hold, partition)


async def claim(store: EventStore, partitions: Sequence[int], hold: float = HOLD) -> Claim:
    """Acquire the (expired) lock rows as the sweeper; rows someone holds are left out."""
    _check(hold, "hold", 0.001)
    owner = new_owner("sweep")
    at = time.monotonic()
    try:
        await _claim_all(store, owner, partitions, hold)
        return Claim(owner, tuple(partitions), at, hold)
    except LeaseHeld:
        pass  # one of them is held: claim them one by one
    claimed = []
    for partition in partitions:
        try:
            await _claim_all(store, owner, [partition], hold)
        except LeaseHeld:
            continue
        claimed.append(partition)
    return Claim(owner, tuple(claimed), at, hold)


async def delete_claimed(store: EventStore, claimed: Claim) -> int:
    """Delete the claimed rows still owned by the sweeper; the number of rows asked to go
    (0 when the claim is too old to trust: its rows are released instead)."""
    if not claimed.partitions:
        return 0
    if time.monotonic() - claimed.at > claimed.hold / 2:
        log.warning(
            "lock sweep: the claim of %d rows is too old; releasing them", len(claimed.partitions)
        )
        async with store.transaction() as tx:
            for partition in claimed.partitions:
                tx.release_lease(LOCK_NAME, claimed.owner, partition)
        return 0
    async with store.transaction() as tx:
        tx.write_tables(
            TableWrite.delete(
                LEASES.name, {"name": LOCK_NAME, "partition": p, "owner": claimed.owner}
            )
            for p in claimed.partitions
        )
    return len(claimed.partitions)


async def sweep_locks(
    store: EventStore, *, grace: float = GRACE, batch: int = BATCH, hold: float = HOLD
) -> int:
    """Delete the rows of durable aggregate locks that ended more than ``grace`` s ago (an
    operator may call it any time, from any process); the number of rows deleted."""
    if type(batch) is not int or batch < 1:
        raise ConfigurationError(f"batch must be an int >= 1, not {batch!r}")
    total = 0
    while True:
        found = await find_expired(store, grace, batch)
        if not found:
            return total
        deleted = await delete_claimed(store, await claim(store, found, hold))
        total += deleted
        if len(found) < batch or deleted == 0:
            return total  # the rest (if any) is held or was claimed by another sweeper


class LockSweeper:
    """``sweep_locks`` every ``interval`` seconds; ``run`` is a supervised background task."""

    def __init__(
        self, store: EventStore, *, grace: float = GRACE, interval: float = INTERVAL
    ) -> None:
        self.store = store
        self.grace = _check(grace, "grace")
        self.interval = _check(interval, "interval", 0.001)
        self.swept = 0  # rows deleted so far
        self.last_sweep: float | None = None  # time.time() of the last sweep that finished

    async def sweep(self) -> int:
        """One sweep now; the rows deleted."""
        deleted = await sweep_locks(self.store, grace=self.grace)
        self.swept += deleted
        self.last_sweep = time.time()
        if deleted:
            log.info("lock sweep: deleted %d rows of ended aggregate locks", deleted)
        return deleted

    async def run(self) -> None:
        """Sweep, then sleep ``interval``, until cancelled (a failure ends the task: its
        supervisor records it and starts it again)."""
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval)

    def __repr__(self) -> str:
        return f"<LockSweeper every {self.interval:g}s grace {self.grace:g}s swept={self.swept}>"
