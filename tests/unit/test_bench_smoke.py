"""`make bench` prints one well-formed JSON line per workload."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chronik

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


def test_quick_growth_prints_each_size() -> None:
    """A quick growth run prints W3 per stream length, W4 with its memory, bytes and W6 sweep."""
    only = "W3-growth,W4-growth,store-bytes,W6-growth"
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", only],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["workload"] for d in lines] == [
        "W3-10",
        "W3-100",
        "W3-1k",
        "W4-100k",
        "W4-100k-memory",
        "store-bytes",
        "W6-1",
        "W6-8",
        "W6-32",
        "W6-128",
    ]
    for d in lines:
        assert d.keys() >= KEYS
        assert d["value"] > 0 and d["ratio"] > 0 and len(d["runs"]) == 1
        assert d["workload"].endswith("-memory") or d["raw"] > 0


def test_quick_bench_prints_the_python_peer() -> None:
    """``--only peer`` prints chronik beside eventsourcing on SQLite W1-W4, figures positive."""
    names = ["W1-peer", "W2-peer", "W3-peer", "W4-peer"]
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", "peer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["workload"] for d in lines] == names
    for d in lines:
        assert d.keys() >= KEYS | {"peer", "raw_runs"}
        assert d["peer"].startswith("eventsourcing 9.5.")
        assert d["backend"] == "sqlite" and d["durability"].startswith("WAL synchronous=NORMAL")
        assert d["value"] > 0 and d["raw"] > 0 and d["ratio"] > 0 and len(d["raw_runs"]) == 1


@pytest.fixture
def raw(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench.raw, the raw sqlite3 baselines (bench/ sits beside src/, not installed)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.raw")


def test_raw_append_checks_the_expectation(raw: Any, tmp_path: Path) -> None:
    """The raw append creates a stream only once and moves it only from the expected version."""
    conn = raw.connect(str(tmp_path / "events.db"))
    assert raw.append(conn, "a", [{"n": 1}], None) == 0
    with pytest.raises(RuntimeError):
        raw.append(conn, "a", [{"n": 2}], None)
    with pytest.raises(RuntimeError):
        raw.append(conn, "a", [{"n": 2}], 5)
    assert raw.append(conn, "a", [{"n": 2}, {"n": 3}], 0) == 2
    rows = conn.execute("SELECT sequence FROM chronik_events ORDER BY position").fetchall()
    assert rows == [(0,), (1,), (2,)]
    assert conn.execute("SELECT version FROM chronik_streams").fetchall() == [(2,)]
    conn.close()


async def test_raw_rows_are_what_chronik_reads(raw: Any, tmp_path: Path) -> None:
    """chronik reads the rows the raw baseline writes as the same events, and the raw readers
    count every one of them across pages."""
    path = str(tmp_path / "events.db")
    conn = raw.connect(path)
    raw.append(conn, "big", [{"i": i} for i in range(1500)], None)
    raw.append_encoded(conn, "other", [b'{"i": -1}'], None)
    assert raw.read_stream(conn, "big") == 1500
    assert raw.read_all(conn) == 1501
    conn.close()
    async with chronik.open_store(f"sqlite:///{path}") as store:
        events = [e async for e in store.read_stream(chronik.StreamId("bench", "big"))]
        assert [(e.sequence, e.type, e.json()) for e in events] == [
            (i, "bench.event", {"i": i}) for i in range(1500)
        ]
        assert await store.stream_version(chronik.StreamId("bench", "other")) == 0
