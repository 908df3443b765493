"""Projections that follow a DCB query: only the matching events of their types are handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik import EventData, Query, QueryItem
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store.base import EventStore

SEATS = Table("seats", {"course": str, "n": int}, primary_key="course")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/q.db"
    async with chronik.open_store(url) as s:
        yield s


def seats_of(courses: list[str]) -> Projection:
    """Seats taken per course, for the given courses only."""
    p = Projection(
        "seats",
        tables=[SEATS],
        batch_size=3,
        query=Query([QueryItem(tags=[f"course:{c}"]) for c in courses]),
    )

    @p.on("seat.taken")
    async def taken(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        course = next(t for t in e.tags if t.startswith("course:")).removeprefix("course:")
        row = await rm.get("seats", course=course)
        rm.upsert("seats", course=course, n=(row["n"] if row else 0) + 1)

    return p


def seat(course: str) -> EventData:
    """A seat taken in ``course``."""
    return EventData("seat.taken", {}, tags=[f"course:{course}", "kind:seat"])


async def test_a_projection_follows_its_query_to_the_head(store: EventStore) -> None:
    """Stored and live events of the handled type outside the query are skipped, the ones
    inside handled once each, and the position still reaches the head."""
    for i in range(10):
        await store.append_tagged([seat(["c1", "c2", "c3"][i % 3])])
    async with ProjectionProcessor(store, seats_of(["c1", "c3"]), heartbeat=0.05) as proc:
        head = await store.head()
        assert head is not None
        async with asyncio.timeout(10):
            await proc.wait_for(head)
        await store.append(chronik.StreamId("course", "c2"), [seat("c2")])
        last = await store.append_tagged([seat("c3")])
        async with asyncio.timeout(10):
            await proc.wait_for(last.position)
        assert proc.position == last.position
    rows = await query(store, "seats", "seats", order_by=("course",))
    assert rows == [{"course": "c1", "n": 4}, {"course": "c3", "n": 4}]


def test_a_projection_query_must_be_a_query() -> None:
    """Anything but a chronik.Query is a ValidationError naming ``query``."""
    with pytest.raises(chronik.ValidationError) as err:
        Projection("bad", query="course:c1")  # type: ignore[arg-type]
    assert err.value.field == "query"
