"""``python -m bench --only archive`` (bench.archive) prints its two JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_archive_prints_the_rebuild_ratio_and_the_stream_read() -> None:
    """--quick --only archive prints the archive+hot vs hot-only rate and the stream read time,
    each naming the event count."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", "archive"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    lines = {line["workload"]: line for line in map(json.loads, out.stdout.splitlines())}
    rebuild, stream = lines["archive-rebuild"], lines["archive-stream"]
    assert rebuild["value"] > 0 and rebuild["raw"] > 0 and rebuild["ratio"] > 0
    assert "30000 events" in rebuild["note"] and "30000 events" in stream["note"]
    assert 0 < stream["value"] < 1000
