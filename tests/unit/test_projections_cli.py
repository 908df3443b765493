"""`chronik projections`: empty stores, queued requests, drops, and what reset answers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.projections import ErrorPolicy, Projection, ProjectionProcessor, ReadModel, Table

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(_build(), ["projections", *args])
    return result.exit_code, result.stdout, result.stderr


def names_projection() -> Projection:
    """A projection of person names that raises on the name "poison"."""
    p = Projection(
        "names",
        tables=[Table("names", {"id": str, "name": str}, primary_key="id")],
        policy=ErrorPolicy(retries=0),
    )

    @p.on("named")
    def named(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if e.json()["name"] == "poison":
            raise ValueError("poison")
        rm.upsert("names", id=e.stream.aggregate_id, name=e.json()["name"])

    return p


def run_once(url: str) -> None:
    """Append a poison event and two good ones, and run the projection until caught up."""
    p = names_projection()

    async def go() -> None:
        async with chronik.open_store(url) as store:
            for agg, name in [("a", "poison"), ("a", "Ada"), ("b", "Bob")]:
                r = await store.append(
                    chronik.StreamId("person", agg), [chronik.EventData("named", {"name": name})]
                )
            async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
                await proc.wait_for(r.position)

    asyncio.run(go())


def test_status_of_a_store_without_projections(tmp_path: Path) -> None:
    """status says there are none (no JSON line with --json); names are checked."""
    url = f"sqlite:///{tmp_path}/e.db"
    assert runner.invoke(_build(), ["db", "init", "--store", url]).exit_code == 0
    code, out, _ = cli("status", "--store", url)
    assert code == 0 and "no projections" in out
    code, out, _ = cli("status", "--json", "--store", url)
    assert code == 0 and out == ""
    code, _, err = cli("pause", "x", "--store", url)
    assert code == 1 and "unknown projection 'x'; known projections: none yet" in err


def test_requests_wait_for_a_processor_and_drop_by_event(tmp_path: Path) -> None:
    """With no processor running, requests are queued; one dead letter is dropped by its id."""
    url = f"sqlite:///{tmp_path}/e.db"
    run_once(url)
    code, out, _ = cli("status", "--json", "--store", url)
    [s] = [json.loads(line) for line in out.splitlines()]
    assert (s["name"], s["state"], s["alive"], s["dead_letters"]) == ("names", "stopped", False, 2)
    for args in (("pause", "names"), ("reset", "names", "--to", "1"), ("rebuild", "names")):
        code, out, _ = cli(*args, "--store", url)
        assert code == 0 and "queued: no processor of names is running" in out, out
    out = cli("dead-letters", "list", "names", "--json", "--store", url)[1]
    letters = [json.loads(line) for line in out.splitlines()]
    assert [d["blocked"] for d in letters] == [False, True]
    code, out, _ = cli(
        "dead-letters", "drop", "names", "--event", letters[0]["event_id"], "--store", url
    )
    assert code == 0 and "dropped 1" in out
    code, out, _ = cli("dead-letters", "list", "--store", url)
    assert code == 0 and "person/a" in out


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    """The store URL of a names projection caught up at position 3, running in a thread."""
    url = f"sqlite:///{tmp_path}/e.db"
    run_once(url)
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with (
            chronik.open_store(url) as store,
            ProjectionProcessor(store, names_projection(), heartbeat=0.05),
        ):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(20)
        yield url
    finally:
        stop.set()
        thread.join(20)


def test_reset_to_a_position_says_what_was_asked(running: str) -> None:
    """reset --to N answers in the user's terms: the next event handled is the first after N,
    never the position the status row happened to show."""
    assert cli("pause", "names", "--store", running)[0] == 0
    code, out, _ = cli("reset", "names", "--to", "2", "--store", running)
    assert code == 0, out
    assert " ".join(out.split()) == (
        "reset of names to position 2 done: the next event it handles is the first after 2 "
        "(names paused)"
    )
    code, out, _ = cli("reset", "names", "--store", running)
    assert code == 0 and "reset of names to the start done: it replays every event" in out
