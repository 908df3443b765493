"""`make bench` prints the projection workloads W8, W9 and W8-rebuild."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_w8_and_w9() -> None:
    """A quick one-run bench prints W8 (both handlers), W9-p50, W9-p99, the rebuild's rate and gap
    with positive figures and raw."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", "W8,W9,W8-rebuild"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    names = ["W8", "W8-upsert", "W9-p50", "W9-p99", "W8-rebuild", "W8-rebuild-progress"]
    assert [d["workload"] for d in lines] == names
    for d in lines:
        assert d["backend"] == "sqlite" and d["unit"] in ("events/s", "ms")
        assert d["value"] > 0 and d["raw"] > 0 and d["ratio"] > 0 and len(d["runs"]) == 1
