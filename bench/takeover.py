"""takeover: how long the partitions of a projection worker that leaves stand still.

Starts its own PostgreSQL 15, then per run a fresh schema, three ``PartitionWorker`` processes
sharing six partitions while events keep coming (chronik.testing.takeover); the owner of
partition 0 leaves and the time until every partition it held progresses again on the
survivors is measured. ``takeover-kill``: kill -9 (the leases must expire: bounded by the lease
ttl); ``takeover-leave``: SIGTERM, a clean leave that releases the partitions at once. One JSON
line each: the median seconds over the runs, with the ttl and heartbeat used. There is no raw
baseline: the figure is compared with the ttl. Run alone with ``python -m bench.takeover``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
from typing import Literal

from bench.__main__ import log
from chronik.testing.services import PostgresService, ServiceNotStarted
from chronik.testing.takeover import measure

TTL = 2.0
HEARTBEAT = 0.2
WORKERS = 3
PARTITIONS = 6


def run(runs: int = 3) -> None:
    """Start a server, measure both kinds of takeover ``runs`` times, print the lines."""
    service = PostgresService(durable=True)
    try:
        service.start()
    except ServiceNotStarted as exc:
        log(f"takeover: skipped ({exc})")
        service.stop()
        return
    schemas = itertools.count()
    kinds: tuple[Literal["kill", "leave"], ...] = ("kill", "leave")
    try:
        for kind in kinds:
            log(f"takeover-{kind} ...")
            seconds = []
            for _ in range(runs):
                url = service.url("postgres", schema=f"takeover_{kind}_{next(schemas)}")
                t = asyncio.run(
                    measure(
                        url,
                        kind=kind,
                        workers=WORKERS,
                        partitions=PARTITIONS,
                        ttl=TTL,
                        heartbeat=HEARTBEAT,
                    )
                )
                seconds.append(t.seconds)
            line = {
                "workload": f"takeover-{kind}",
                "backend": "postgres",
                "value": round(statistics.median(seconds), 3),
                "unit": "s",
                "runs": [round(s, 3) for s in seconds],
                "ttl": TTL,
                "heartbeat": HEARTBEAT,
                "note": f"{WORKERS} worker processes, {PARTITIONS} partitions, events coming; "
                + ("the leader killed -9" if kind == "kill" else "the leader stopped (SIGTERM)")
                + ": seconds until each of its partitions progressed on a survivor",
            }
            print(json.dumps(line), flush=True)
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover")
    parser.add_argument("--runs", type=int, default=3)
    run(parser.parse_args().runs)


if __name__ == "__main__":
    main()
