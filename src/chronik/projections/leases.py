"""The old import path of leases (they now live in ``chronik.store.leases``), kept for callers.

``acquire`` is ``chronik.store.leases.acquire``; ``write`` makes the ``lease`` / ``release``
TableWrite that ``UnitOfWork.write_tables`` still accepts (it becomes a lease operation of the
unit): new code calls ``tx.acquire_lease`` / ``tx.release_lease`` instead.
"""

from __future__ import annotations

from chronik.store.leases import Lease, acquire, holders, release
from chronik.store.records import TableWrite
from chronik.store.system_tables import LEASES

__all__ = ["Lease", "acquire", "holders", "release", "write"]


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
