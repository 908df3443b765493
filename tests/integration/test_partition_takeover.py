"""Partition takeover on real PostgreSQL with real worker processes: kill -9 and a clean leave.

Three ``PartitionWorker`` processes share six partitions while events keep coming; the owner of
partition 0 (the plan's leader) leaves, and the time until every partition it held makes
progress again on the survivors is measured (chronik.testing.takeover, also ``python -m bench
--only takeover``). After kill -9 the leases must expire first, so the bound derives from the
ttl; a clean leave releases them at once, so it must be far below the ttl.
"""

from __future__ import annotations

import asyncio

from chronik.testing.takeover import measure

TTL = 3.0
HEARTBEAT = 0.2
# the leases expire at most ttl after the victim's last commit; a survivor sees the member gone
# at its next heartbeat and claims at the one after; the rest is scheduling on a busy machine
KILL_BOUND = TTL + 3 * HEARTBEAT + 1.5
LEAVE_BOUND = 3 * HEARTBEAT + 0.9  # half the ttl: nothing waits for a lease to expire


def test_kill_9_of_a_worker_is_taken_over_within_the_lease_ttl(postgres_url: str) -> None:
    """Every partition of a worker killed -9 progresses on the survivors within ttl + slack."""
    t = asyncio.run(measure(postgres_url, kind="kill", ttl=TTL, heartbeat=HEARTBEAT))
    print(f"kill -9 takeover: {t.seconds:.2f} s for partitions {t.partitions} (ttl {TTL} s)")
    assert t.partitions and 0 in t.partitions
    assert t.seconds < KILL_BOUND, t


def test_a_clean_leave_hands_partitions_over_well_before_the_ttl(postgres_url: str) -> None:
    """A worker stopped by SIGTERM releases its partitions at once: taken over in heartbeats."""
    t = asyncio.run(measure(postgres_url, kind="leave", ttl=TTL, heartbeat=HEARTBEAT))
    print(f"clean leave handover: {t.seconds:.2f} s for partitions {t.partitions} (ttl {TTL} s)")
    assert t.partitions and 0 in t.partitions
    assert t.seconds < LEAVE_BOUND < TTL, t
