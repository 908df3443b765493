"""`make demo` does real work on its own SQLite file; `make run` needs only the runtime extras."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "examples.shop.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_scenario_writes_what_it_prints_and_runs_twice(tmp_path: Path) -> None:
    """Two runs in one directory both succeed; data/demo.db holds every event they report."""
    first = run_scenario(tmp_path)
    assert "store sqlite:///data/demo.db" in first
    assert "duplicate = True, same events = True" in first
    assert "CommandRejected: Customer already exists" in first
    assert "InvalidCommand" in first and "UnknownDomain" in first
    assert "amount_cents=3750" in first and "already completed" in first
    assert "points=37" in first
    assert "the live subscription received 4 events" in first
    second = run_scenario(tmp_path)
    assert "head position 8" in second
    with sqlite3.connect(tmp_path / "data" / "demo.db") as db:
        assert db.execute("SELECT count(*) FROM chronik_events").fetchone()[0] == 8
        assert db.execute("SELECT count(*) FROM chronik_streams").fetchone()[0] == 4


def test_demo_never_touches_the_served_store(tmp_path: Path) -> None:
    """The demo awards loyalty points itself: it writes neither to data/events.db (what
    `make run` serves, whose saga would award them again) nor to $CHRONIK_STORE."""
    served = tmp_path / "served.db"
    run_scenario(tmp_path, env={"CHRONIK_STORE": f"sqlite:///{served}"})
    assert not served.exists() and not (tmp_path / "data" / "events.db").exists()
    assert (tmp_path / "data" / "demo.db").exists()
    other = tmp_path / "other.db"
    assert f"store sqlite:///{other}" in run_scenario(tmp_path, "--store", f"sqlite:///{other}")


def make_dry_run(target: str) -> str:
    """The commands `make TARGET` would run in a fresh clone (make -n -B)."""
    out = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_the_runtime_extras_only() -> None:
    """make run and make demo install `.[all]`, never the dev tools; make test, lint and
    bench install the dev extra on top."""
    for target in ("run", "demo"):
        commands = make_dry_run(target)
        assert "-e '.[all]'" in commands and "dev" not in commands, commands
    for target in ("test", "lint", "bench"):
        commands = make_dry_run(target)
        assert "-e '.[all,dev]'" in commands and "-e '.[all]'" in commands, commands
