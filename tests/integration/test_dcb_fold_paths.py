"""The DCB command path folds a query's events from payload rows and hands over to whole events
from the first one that needs more (an upcast, another content type, an unregistered type, an
unreadable payload), on memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import (
    NO_STREAM,
    Command,
    EventData,
    Query,
    QueryItem,
    RecordedEvent,
    StreamId,
)
from chronik.errors import UndecodableEvent

pytestmark = pytest.mark.asyncio


class Noted(msgspec.Struct):
    text: str
    by: str


class Ask(msgspec.Struct):
    topic: str


def _registry() -> chronik.EventRegistry:
    registry = chronik.EventRegistry()
    registry.register(Noted, "note.added", version=2)

    @registry.upcaster("note.added", 1)
    def add_author(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "by": "unknown"}

    return registry


def _decider(seen: list[Any]) -> chronik.DcbDecider:
    """Records what evolve got, in order; decides one note more."""

    def evolve(state: list[Any], event: Any) -> list[Any]:
        seen.append(event)
        state.append(event)
        return state

    def decide(command: Command, state: list[Any]) -> Any:
        return EventData("note.counted", {"n": len(state)}, tags=[f"topic:{command.payload.topic}"])

    def query(command: Command) -> Query:
        topic = f"topic:{command.payload.topic}"
        return Query([QueryItem(["note.added", "note.raw", "note.blob"], [topic])])

    return chronik.DcbDecider("notes", query, decide, evolve, list, commands={"Ask": Ask})


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the app runs on."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/n.db"


def _note(text: str, by: str | None = None, version: int = 2) -> EventData:
    payload = {"text": text} if by is None else {"text": text, "by": by}
    return EventData("note.added", payload, schema_version=version, tags=["topic:t"])


async def test_rows_then_whole_events_fold_in_the_global_order(url: str) -> None:
    """Current events fold from rows; from an old-version event on, whole events (upcast), an
    unregistered type as its RecordedEvent, another content type as is: all in log order."""
    seen: list[Any] = []
    app = chronik.Chronik(store=url, registry=_registry(), run_projections=False)
    app.add_model(_decider(seen))
    async with app:
        store = app.store
        await store.append_tagged([_note("a", "ann"), _note("b", "bob")])
        await store.append_tagged([_note("old", version=1)])
        await store.append_tagged([EventData("note.raw", {"x": 1}, tags=["topic:t"])])
        blob = EventData(
            "note.blob", b"\x01", content_type="application/octet-stream", tags=["topic:t"]
        )
        await store.append(StreamId("notes", "blob"), [blob], NO_STREAM)
        await store.append_tagged([_note("c", "cy")])
        await store.append_tagged([_note("elsewhere", "x")], domain="other")  # same tag: read
        result = await app.dispatch(
            Command(domain="notes", aggregate_id="t", type="Ask", payload={"topic": "t"})
        )
    assert [e.json() for e in result.events] == [{"n": 7}]
    kinds = [
        (e.text, e.by) if isinstance(e, Noted) else (e.type, e.json())
        for e in seen
        if not isinstance(e, RecordedEvent) or e.content_type == chronik.JSON
    ]
    assert kinds == [
        ("a", "ann"),
        ("b", "bob"),
        ("old", "unknown"),
        ("note.raw", {"x": 1}),
        ("c", "cy"),
        ("elsewhere", "x"),
    ]
    assert [(e.type, e.payload) for e in seen if isinstance(e, RecordedEvent)][1] == (
        "note.blob",
        b"\x01",
    )


async def test_an_unreadable_payload_fails_the_command_naming_the_event(url: str) -> None:
    """A stored payload that does not fit its class leaves the fast path and fails the command
    with UndecodableEvent naming the event; nothing is appended."""
    seen: list[Any] = []
    app = chronik.Chronik(store=url, registry=_registry(), run_projections=False)
    app.add_model(_decider(seen))
    async with app:
        await app.store.append_tagged([_note("a", "ann")])
        bad = EventData("note.added", {"text": 7}, schema_version=2, tags=["topic:t"])
        await app.store.append_tagged([bad])
        with pytest.raises(UndecodableEvent) as err:
            await app.dispatch(
                Command(domain="notes", aggregate_id="t", type="Ask", payload={"topic": "t"})
            )
        assert bad.event_id in str(err.value)
        assert [e.type async for e in app.store.read_all()] == ["note.added", "note.added"]
    assert [(e.text, e.by) for e in seen] == [("a", "ann")]
