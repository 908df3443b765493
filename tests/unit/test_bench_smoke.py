"""`make bench` prints one well-formed JSON line per workload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"workload", "backend", "value", "unit", "raw", "ratio", "runs", "durability"}


def test_quick_bench_prints_every_workload() -> None:
    """A quick one-run bench prints the SQLite and command workloads with positive figures."""
    names = ["W1", "W2", "W3", "W4", "W4-memory", "W6", "W3s", "W7"]
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", ",".join(names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["workload"] for d in lines] == names
    for d in lines:
        assert d.keys() >= KEYS
        assert d["value"] > 0 and d["raw"] > 0 and d["ratio"] > 0 and len(d["runs"]) == 1
