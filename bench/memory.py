"""Peak resident memory added by reading a whole store (run in a fresh process by the bench)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import chronik
from bench import raw


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    raise RuntimeError(field)


async def _read_chronik(path: str) -> int:
    n = 0
    async with chronik.open_store(f"sqlite:///{path}") as store:
        async for e in store.read_all():
            e.json()
            n += 1
    return n


def main() -> None:
    which, path = sys.argv[1], sys.argv[2]
    # Warm up imports and the driver so only the read itself is measured.
    sqlite3.connect(":memory:").close()
    before = _status("VmRSS")
    if which == "chronik":
        asyncio.run(_read_chronik(path))
    else:
        conn = raw.connect(path)
        raw.read_all(conn)
        conn.close()
    print(round(_status("VmHWM") - before, 2))


if __name__ == "__main__":
    main()
