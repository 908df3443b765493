"""The DCB bench lines (bench/dcb.py): quick runs print well-formed figures, and the chronik
sides of the speedrun do the scenario's work."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik import Query
from chronik.testing.service_base import unavailable

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"workload", "backend", "value", "unit", "raw", "ratio", "runs", "raw_runs", "durability"}


def _bench(only: str, timeout: float) -> tuple[list[dict[str, Any]], str]:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--only", only],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()], out.stderr


def test_quick_dcb_prints_the_sqlite_lines() -> None:
    """``--only dcb`` prints dcb-condition and dcb-tag-query on SQLite with positive figures."""
    lines, _ = _bench("dcb", 120)
    assert [(d["workload"], d["backend"]) for d in lines] == [
        ("dcb-condition", "sqlite"),
        ("dcb-tag-query", "sqlite"),
    ]
    for d in lines:
        assert d.keys() >= KEYS
        assert d["value"] > 0 and d["raw"] > 0 and d["ratio"] > 0 and len(d["runs"]) == 1


def test_quick_pg_dcb_prints_the_speedrun_beside_the_peer() -> None:
    """``--only pg-dcb`` prints the three speedrun lines beside eventsourcing and the condition
    and tag-query lines on PostgreSQL, figures positive."""
    lines, err = _bench("pg-dcb", 300)
    if not lines and "postgres dcb: skipped" in err:  # a skip without, a failure with CI's rule
        unavailable(f"PostgreSQL cannot start here: {err.strip()}")
    assert [d["workload"] for d in lines] == [
        "dcb-speedrun-aggregates",
        "dcb-speedrun-dcb",
        "dcb-speedrun-dcb-store",
        "dcb-condition",
        "dcb-tag-query",
    ]
    for d in lines:
        assert d.keys() >= KEYS and d["backend"] == "postgres"
        assert d["value"] > 0 and d["raw"] > 0 and d["ratio"] > 0
    for d in lines[:3]:
        assert d["peer"].startswith("eventsourcing 9.5.") and d["unit"] == "ops/s"
        assert d["ratio"] == pytest.approx(d["value"] / d["raw"], rel=0.01)


@pytest.fixture
def speedrun(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench.dcb_speedrun, the chronik side of the speedrun (bench/ sits beside src/)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.dcb_speedrun")


@pytest.mark.parametrize("kind", ["aggregates", "dispatch", "store"])
async def test_each_chronik_side_subscribes_every_student_to_every_course(
    speedrun: Any, kind: str, tmp_path: Path
) -> None:
    """One iteration of each chronik side stores 10 students, 10 courses and all 100
    subscriptions (none refused: a student may take the 10 courses)."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    rate = await speedrun.chronik_speedrun(url, kind, 0.0)
    assert rate > 0
    async with chronik.open_store(url) as store:
        events = [e async for e in store.read_all()]
    types = sorted({e.type for e in events})
    if kind == "aggregates":
        assert len(events) == 20 + 2 * 100
        assert types == [
            "course.accepted_student",
            "course.registered",
            "student.joined_course",
            "student.registered",
        ]
    else:
        assert len(events) == 120
        assert types == ["course.defined", "student.registered", "student.subscribed"]
        async with chronik.open_store(url) as store:
            s0 = [e async for e in store.read_query(Query.of(tags=["student:s0-0"]))]
        assert len(s0) == 11 and all(e.stream.domain == "courses" for e in s0)
