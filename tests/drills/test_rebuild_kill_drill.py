"""Drill: kill -9 of `chronik serve` in the middle of a blue/green rebuild of an unpartitioned
projection while another process appends, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.projections import ProjectionAdmin, ProjectionStatus, query
from tests.drills.helpers import (
    LEASES,
    Probe,
    Serve,
    cli,
    report,
    seconds,
    until,
    wait_quiet,
    writer,
)

pytestmark = pytest.mark.drill

DELAY = 0.001  # seconds each event takes in the projection: a build of 3,000 lasts seconds


def config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "chronik.yaml"
    path.write_text(
        "grpc: {host: 127.0.0.1, port: 0}\n"
        f"http: {{host: 127.0.0.1, port: {port}}}\n"
        "projections: tests.drills.apps:counts_projections\n" + LEASES
    )
    return path


async def append_initial(store: chronik.EventStore, n: int) -> None:
    """``n`` events over 40 streams, ten per append."""
    for start in range(0, n, 10):
        for_stream: dict[str, list[chronik.EventData]] = {}
        for i in range(start, min(n, start + 10)):
            for_stream.setdefault(f"s{(i // 10) % 40}", []).append(
                chronik.EventData("added", {"x": i})
            )
        for agg, data in for_stream.items():
            await store.append(chronik.StreamId("acc", agg), data)


def fold(events: list[chronik.RecordedEvent], upto: chronik.Position | None = None) -> Any:
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.type != "added" or (upto is not None and e.position > upto):
            continue
        r = rows.setdefault(
            e.stream.aggregate_id, {"id": e.stream.aggregate_id, "n": 0, "total": 0}
        )
        r["n"] += 1
        r["total"] += e.json()["x"]
        r["last_seq"] = e.sequence
    return sorted(rows.values(), key=lambda r: r["id"])


async def status(store: chronik.EventStore) -> ProjectionStatus | None:
    found = [s for s in await ProjectionAdmin(store).statuses() if s.name == "counts"]
    return found[0] if found else None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_kill_9_mid_rebuild_then_restart_completes_the_build_exactly_once(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    scale: int,
    record_property: Callable[[str, object], None],
) -> None:
    """A rebuild of `counts` (3,000 x scale events) is requested with the CLI while another
    process appends; serve is killed -9 a third of the way through the build; the serving
    rows are then still the fold at their checkpoint and the build is still recorded; a new
    serve resumes the build from its checkpoint and switches to generation 2, whose rows equal
    a fresh fold of every event, none applied twice, none parked."""
    url = (
        f"sqlite:///{tmp_path}/events.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    initial = 3000 * scale
    serve = Serve(tmp_path, tmp_path / "chronik.yaml", url, env={"CHRONIK_DRILL_DELAY": str(DELAY)})
    config(tmp_path, serve.http_port)
    appender = None
    async with chronik.open_store(url) as store:
        try:
            await append_initial(store, initial)
            positions = [e.position for e in await _events(store)]
            serve.start()
            await serve.wait_ready()
            await until(lambda: _caught_up(store, 1), 60, "generation 1 caught up")
            appender = writer(url, 300 * scale, 0.01)
            asked = await asyncio.to_thread(
                cli, "projections", "rebuild", "counts", "--store", url, "--no-wait"
            )
            assert asked.returncode == 0, asked.stderr
            await until(lambda: _built(store, positions, initial // 3), 60, "a third of the build")
            serve.kill9()
            killed = await status(store)
            assert killed is not None and killed.building == 2 and killed.build_position
            at_kill = chronik.Position.parse(killed.build_position)
            serving = await store.load_checkpoint("projection:counts:g1")
            assert serving is not None  # the serving generation: exactly its checkpoint's fold
            assert await _rows(store) == fold(await _events(store), serving.position)

            stop_probe = asyncio.Event()
            probe = Probe(serve.base_url)
            serve.start()
            restarted = time.monotonic()
            prober = asyncio.create_task(probe.run(stop_probe))
            try:
                resumed = await until(
                    lambda: _moved_past(store, at_kill), 60, "the build resumed after restart"
                )
                switched = await until(lambda: _switched(store), 90, "generation 2 took over")
                out, err = await asyncio.to_thread(appender.communicate, timeout=120)
                assert appender.returncode == 0, err
                appended = int(out)
                events = await wait_quiet(store, ["counts"], timeout=60)
                await until(lambda: _ready(probe, restarted), 30, "/readyz 200")
            finally:
                stop_probe.set()
                await prober
            final = await status(store)
            rows = await _rows(store)
            parked = await ProjectionAdmin(store).dead_letters("counts")
        finally:
            serve.stop()
            if appender is not None and appender.poll() is None:
                appender.kill()
                appender.wait()
    stored = sum(1 for e in events if e.type == "added")
    applied = sum(r["n"] for r in rows)
    report(
        record_property,
        f"rebuild_kill_9_{backend}",
        scale=scale,
        injected_faults=1,
        commands_acknowledged=initial + appended,
        events_stored=stored,
        build_done_at_kill=_done(positions, at_kill),
        acknowledged_lost=max(0, initial + appended - stored) + max(0, stored - applied),
        duplicated_effects=max(0, applied - stored) + len(parked),
        answers_5xx=0,
        recover_build_resumed_s=seconds(resumed, restarted),
        recover_switch_s=seconds(switched, restarted),
        recover_readyz_first_s=seconds(probe.first_ready_after(restarted), restarted),
        recover_readyz_s=seconds(probe.ready_for_good_after(restarted), restarted),
    )
    assert final is not None and (final.generation, final.building) == (2, None)
    assert (probe.ready_for_good_after(restarted) or 1e9) - restarted < 30, probe.problems
    assert [(d.sequence, d.error) for d in parked] == []
    assert (stored, applied) == (initial + appended, initial + appended)
    assert rows == fold(events)


async def _events(store: chronik.EventStore) -> list[chronik.RecordedEvent]:
    return [e async for e in store.read_all()]


async def _rows(store: chronik.EventStore) -> list[dict[str, Any]]:
    return await query(store, "counts", "counts", order_by=("id",))


def _done(positions: list[chronik.Position], at: chronik.Position) -> int:
    return bisect.bisect_right(positions, at)


async def _caught_up(store: chronik.EventStore, generation: int) -> bool:
    s = await status(store)
    return (
        s is not None
        and s.alive
        and s.generation == generation
        and s.building is None
        and s.lag_events == 0
    )


async def _built(store: chronik.EventStore, positions: list[chronik.Position], n: int) -> bool:
    s = await status(store)
    return (
        s is not None
        and s.building == 2
        and s.build_position is not None
        and _done(positions, chronik.Position.parse(s.build_position)) >= n
    )


async def _moved_past(store: chronik.EventStore, at: chronik.Position) -> bool:
    s = await status(store)
    if s is None:
        return False
    if s.generation == 2:
        return True
    return s.build_position is not None and chronik.Position.parse(s.build_position) > at


async def _switched(store: chronik.EventStore) -> bool:
    s = await status(store)
    return s is not None and s.generation == 2 and s.building is None


async def _ready(probe: Probe, after: float) -> bool:
    """Whether /readyz has answered 200, and only 200, for the last second."""
    since = probe.ready_for_good_after(after)
    return since is not None and time.monotonic() - since >= 1.0
