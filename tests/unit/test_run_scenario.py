"""`make run`'s scenario does real work on the SQLite file and can run again."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "examples.shop.run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_scenario_writes_what_it_prints_and_runs_twice(tmp_path: Path) -> None:
    """Two runs in one directory both succeed; data/events.db holds every event they report."""
    first = run_scenario(tmp_path)
    assert "duplicate = True, same events = True" in first
    assert "CommandRejected: Customer already exists" in first
    assert "InvalidCommand" in first and "UnknownDomain" in first
    assert "amount_cents=3750" in first and "already completed" in first
    assert "points=37" in first
    assert "the live subscription received 4 events" in first
    second = run_scenario(tmp_path)
    assert "head position 8" in second
    with sqlite3.connect(tmp_path / "data" / "events.db") as db:
        assert db.execute("SELECT count(*) FROM chronik_events").fetchone()[0] == 8
        assert db.execute("SELECT count(*) FROM chronik_streams").fetchone()[0] == 4
