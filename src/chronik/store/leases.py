"""Leases: one owner at a time per (name, partition), decided by the database's clock.

Projection processors, partition workers, the outbox dispatcher and the deadline scheduler run
one active instance each by holding a lease. A lease is part of the store port:

* alone: ``await store.acquire_lease(name, owner, ttl)`` claims or renews it and returns its
  fencing epoch (LeaseHeld while another owner's lease is unexpired), ``release_lease`` gives
  it up, ``read_leases`` lists the holders;
* inside a unit of work: ``tx.acquire_lease(...)`` / ``tx.release_lease(...)`` commit or roll
  back with the unit's appends, checkpoints and table writes; a refused lease fails the unit.

The epoch starts at 1 and grows by one each time the owner changes; checkpoints written with
it are fenced (CheckpointFenced for an older epoch), so an owner that lost its lease can never
commit again. ``version`` is a number the holder publishes with its lease (a partition worker:
the projection version it runs). Each adapter implements the ``LeaseOp`` s of a unit in its own
code (``chronik.store.memory``, ``chronik.store.sqlite.leases``, ``chronik.store.postgres.leases``)
on the ``chronik_leases`` table of its migrations.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Final, NamedTuple

from chronik.errors import LeaseHeld, ValidationError
from chronik.store.records import LeaseOp
from chronik.store.system_tables import LEASES

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["Lease", "LeaseOp", "acquire", "check_lease", "holders", "release"]

_INT63: Final = 2**63 - 1
_MAX_TTL: Final = 10 * 365 * 86400.0  # seconds: ttl_us stays far inside int64


class Lease(NamedTuple):
    """A lease as stored: who holds (name, partition) until when, with which epoch."""

    name: str
    partition: int
    owner: str
    epoch: int
    #: Microseconds since the epoch (database clock) at which the lease ends; 0 once released.
    expires_at_us: int
    version: int = 0

    def valid(self, now_us: int | None = None) -> bool:
        """Whether the lease is unexpired at ``now_us`` (default: this machine's clock now)."""
        return self.expires_at_us > (time.time_ns() // 1000 if now_us is None else now_us)


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise ValidationError(
            f"invalid lease {what} {value!r}: expected 1..256 printable characters", field=what
        )
    return value


def check_lease(
    op: str, name: str, owner: str, ttl: float = 0.0, partition: int = 0, version: int = 0
) -> LeaseOp:
    """The checked LeaseOp (``acquire`` or ``release``); ValidationError naming the field."""
    if op not in ("acquire", "release"):
        raise ValidationError(f"invalid lease op {op!r}", field="op")
    _check_text(name, "name")
    _check_text(owner, "owner")
    if type(partition) is not int or not 0 <= partition <= _INT63:
        raise ValidationError(f"invalid lease partition {partition!r}", field="partition")
    if type(version) is not int or not -_INT63 <= version <= _INT63:
        raise ValidationError(f"invalid lease version {version!r}", field="version")
    if (
        type(ttl) not in (int, float)
        or not math.isfinite(ttl)  # NaN and infinities
        or not 0 <= ttl <= _MAX_TTL
    ):
        raise ValidationError(f"invalid lease ttl {ttl!r}: expected 0..{_MAX_TTL} s", field="ttl")
    return LeaseOp(op, name, partition, owner, int(ttl * 1_000_000), version)


async def acquire(
    store: EventStore,
    name: str,
    owner: str,
    ttl: float,
    partition: int = 0,
    *,
    version: int = 0,
) -> int | None:
    """Claim or renew the lease; its epoch, or None while another owner holds it."""
    try:
        return await store.acquire_lease(name, owner, ttl, partition, version=version)
    except LeaseHeld:
        return None


async def release(store: EventStore, name: str, owner: str, partition: int = 0) -> None:
    """Let ``owner``'s lease expire now (nothing happens to another owner's lease)."""
    await store.release_lease(name, owner, partition)


async def holders(
    store: EventStore, name: str | None = None, partition: int | None = None
) -> list[Lease]:
    """The stored leases (of ``name``, of one partition of it), expired ones included."""
    where: dict[str, object] = {}
    if name is not None:
        where["name"] = _check_text(name, "name")
    if partition is not None:
        where["partition"] = partition
    rows = await store.read_table(LEASES.name, where, ("name", "partition"))
    return [
        Lease(
            r["name"],
            r["partition"],
            r["owner"],
            r["epoch"],
            r["expires_at"],
            r.get("version") or 0,
        )
        for r in rows
    ]
