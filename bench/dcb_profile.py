"""Where a DCB speedrun operation's time goes, per side, in measures that noise moves little.

``python -m bench.dcb_profile [--seconds 5] [--runs 3] [--fsync off]`` runs the speedrun of
bench/dcb.py (eventsourcing's ``DCBApplication``, chronik's ``Chronik.dispatch`` and chronik's
store API, alternated, a CHECKPOINT before each run) on a PostgreSQL server of its own and
prints one JSON line per side with per-operation medians:

- ``wall_us``: the speedrun's own figure (1e6 / ops per second);
- ``client_cpu_us``: this process's CPU time (user + system) per operation;
- ``server_cpu_us``: the server's CPU time per operation (the postmaster and every child:
  backends, WAL writer, checkpointer; read from /proc, so Linux only);
- ``wal_bytes``, ``wal_syncs``, ``commits``: WAL written, WAL flushes (``pg_stat_wal``) and
  committed transactions (``pg_stat_database``) per operation, other sessions excepted;
- ``rest_us``: wall - client - server, the time neither side ran (WAL flushes, the wake-ups
  of a round trip, other load of the machine).

On a busy machine ``wall_us`` swings by tens of percent from run to run; CPU, WAL and commit
counts per operation move far less, and say which side does what work. The figures are the
benchmark's (same scenario, same pool of one connection, same durability unless ``--fsync
off``); the speed target is judged on ``python -m bench --only pg-dcb`` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.dcb_speedrun import chronik_speedrun

KINDS = ("peer", "dispatch", "store")


def server_cpu(data_dir: Path) -> float:
    """CPU seconds of the server so far: the postmaster (with its exited children) and the
    children running now."""
    pm = (data_dir / "postmaster.pid").read_text().split()[0]
    pids = [pm]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == pm:
                pids.append(proc.name)
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: counted in the postmaster's children times
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def server_counters(base: str) -> tuple[int, int, int]:
    """(WAL bytes, WAL syncs, commits) so far, after a CHECKPOINT (each run starts clean)."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, (SELECT wal_sync FROM pg_stat_wal), "
            "(SELECT sum(xact_commit) FROM pg_stat_database)"
        ).fetchone()
        assert row is not None
        # this session's own two statements commit too: 2 per call, taken off below
        return int(row[0]), int(row[1]), int(row[2])


def measure(run: Callable[[], float], base: str, data_dir: Path) -> dict[str, float]:
    """One run of ``run`` (ops/s) and its per-operation figures."""
    before = server_counters(base)
    cpu0, srv0, wall0 = os.times(), server_cpu(data_dir), time.perf_counter()
    rate = run()
    wall, cpu1, srv1 = time.perf_counter() - wall0, os.times(), server_cpu(data_dir)
    after = server_counters(base)
    ops = rate * wall
    client = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    per = {
        "wall_us": 1e6 / rate,
        "client_cpu_us": client / ops * 1e6,
        "server_cpu_us": (srv1 - srv0) / ops * 1e6,
        "wal_bytes": (after[0] - before[0]) / ops,
        "wal_syncs": (after[1] - before[1]) / ops,
        "commits": (after[2] - before[2] - 2) / ops,
    }
    per["rest_us"] = per["wall_us"] - per["client_cpu_us"] - per["server_cpu_us"]
    return per


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dcb_profile")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    args = parser.parse_args()

    from bench import dcb_peer
    from bench import postgres as pgb
    from chronik.testing.services import PostgresService

    service = PostgresService(durable=args.fsync == "on")
    service.start()
    base = pgb.BASE = service.url("postgres")
    try:

        def side(kind: str) -> Callable[[], float]:
            if kind == "peer":
                return lambda: dcb_peer.run_dcb(base, f"peer-{time.time_ns()}", args.seconds)
            return lambda: asyncio.run(
                chronik_speedrun(pgb.url_for(f"{kind}-{time.time_ns()}", 1), kind, args.seconds)
            )

        runs: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        for _ in range(args.runs):
            for kind in KINDS:
                runs[kind].append(measure(side(kind), base, service.data_dir))
        for kind in KINDS:
            line: dict[str, Any] = {"side": kind, "fsync": args.fsync, "runs": args.runs}
            for key in runs[kind][0]:
                line[key] = round(statistics.median(r[key] for r in runs[kind]), 2)
            print(json.dumps(line), flush=True)
    finally:
        service.stop()


if __name__ == "__main__":
    main()
