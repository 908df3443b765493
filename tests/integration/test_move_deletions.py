"""Moves of stores whose streams were soft-deleted, hard-deleted, truncated, compacted and
scavenged: memory -> SQLite -> PostgreSQL, each move verified, then reads and appends behave
the same in every store, and a re-run changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.errors import InvalidExport, StreamDeleted, WrongExpectedVersion
from chronik.lifecycle import move_store
from chronik.lifecycle.export import export_lines
from chronik.lifecycle.importer import import_events
from chronik.messages import NO_STREAM, EventData, Position, StreamId
from chronik.store import EventStore
from chronik.store.memory import MemoryEventStore
from chronik.store.retention import Retention

SOFT = StreamId("cart", "soft")
HARD = StreamId("cart", "hard")
TRUNC = StreamId("cart", "trunc")
COMPACT = StreamId("cart", "compact")
PLAIN = StreamId("cart", "plain", "acme")
ALL = (SOFT, HARD, TRUNC, COMPACT, PLAIN)


def ev(i: int) -> EventData:
    """One ordinary event."""
    return EventData("cart.item_added", {"i": i}, {"correlation_id": f"r{i}"})


async def fill(store: EventStore) -> None:
    """Every kind of stream over time, interleaved in the global order."""
    await store.append(SOFT, [ev(0), ev(1), ev(2)], NO_STREAM)
    await store.append(HARD, [ev(0), ev(1)], NO_STREAM)
    await store.append(TRUNC, [ev(i) for i in range(5)], NO_STREAM)
    await store.delete_stream(SOFT, 2)
    await store.append(SOFT, [ev(4), ev(5)], NO_STREAM)  # started again: sequences 4, 5
    await store.delete_stream(HARD, 1, hard=True, metadata={"reason": "gdpr"})
    await store.append(COMPACT, [ev(i) for i in range(4)], NO_STREAM)
    await store.compact_stream(COMPACT, 2, EventData("cart.summary", {"items": 3}))
    await store.set_retention(TRUNC, Retention(max_age=30 * 86400.0, truncate_before=2))
    await store.set_retention(PLAIN, Retention(max_count=10))
    await store.append(PLAIN, [ev(9)], NO_STREAM)


Seen = tuple[object, list[tuple[str, int, str, bytes]], Retention]


async def observe(store: EventStore) -> dict[str, Seen]:
    """What a reader sees of every stream: versions, ids, types, sequences, rules."""
    seen: dict[str, Seen] = {}
    for stream in ALL:
        try:
            version: object = await store.stream_version(stream)
            events = [
                (e.event_id, e.sequence, e.type, e.payload) async for e in store.read_stream(stream)
            ]
        except StreamDeleted:
            version, events = "tombstone", []
        seen[str(stream)] = (version, events, await store.get_retention(stream))
    return seen


async def behave(store: EventStore) -> list[object]:
    """Appends after the move: answered the same way by every store."""
    out: list[object] = []
    try:
        await store.append(HARD, [ev(7)])
    except StreamDeleted as exc:
        out.append(type(exc).__name__)
    out.append((await store.append(SOFT, [ev(6)], 5)).last_sequence)
    try:
        await store.append(TRUNC, [ev(7)], 1)
    except WrongExpectedVersion as exc:
        out.append(exc.actual)
    out.append((await store.append(COMPACT, [ev(8)], 3)).last_sequence)
    return out


@pytest.mark.asyncio
async def test_memory_sqlite_postgres_keep_deletes_and_retention(
    tmp_path: Path, postgres_url: str
) -> None:
    """Each move verifies; every store then reads and answers appends like the source, and a
    re-run of each move appends nothing."""
    async with (
        MemoryEventStore() as mem,
        chronik.open_store(f"sqlite:///{tmp_path}/t.db") as lite,
        chronik.open_store(postgres_url) as pg,
    ):
        await fill(mem)
        want = await observe(mem)
        assert want[str(SOFT)][0] == 5 and want[str(HARD)][0] == "tombstone"
        for source, target in ((mem, lite), (lite, pg)):
            report = await move_store(source, target)
            assert report.verified is True, report.problem
            assert report.imported.retention == 5
            assert await observe(target) == want
            again = await move_store(source, target)
            assert again.verified is True and again.imported.appended == 0
            assert again.imported.skipped == report.exported.events
            assert await observe(target) == want
        answers = [await behave(store) for store in (mem, lite, pg)]
        assert answers[0] == answers[1] == answers[2] == ["StreamDeleted", 6, 4, 4]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An empty target store of each kind."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/target.db"
    else:
        url = request.getfixturevalue("postgres_url")
    async with chronik.open_store(url) as store:
        yield store


async def _lines(store: EventStore, after: Position | None = None) -> list[bytes]:
    return [line async for line in export_lines(store, after=after)]


async def test_incremental_and_resumed_imports_across_deletes(target: EventStore) -> None:
    """An export after a soft delete imports onto the earlier one (the stream starts again in
    the target), and a full export imported over a truncated partial one checks the hidden
    events as retries and appends only the rest; every re-run changes nothing."""
    async with MemoryEventStore() as src:
        await src.append(SOFT, [ev(0), ev(1)], NO_STREAM)
        await src.append(TRUNC, [ev(0), ev(1), ev(2)], NO_STREAM)
        await src.delete_stream(SOFT, 1)
        await src.set_retention(TRUNC, Retention(truncate_before=2))
        first = await _lines(src)
        head = await src.head()
        await src.append(SOFT, [ev(3)], NO_STREAM)
        await src.append(TRUNC, [ev(3), ev(4)], 2)
        later, full = await _lines(src, after=head), await _lines(src)
        one = await import_events(target, first)
        assert (one.appended, one.retention) == (6, 2)
        two = await import_events(target, later)
        assert (two.appended, two.skipped) == (3, 0)
        again = await import_events(target, full)
        assert (again.appended, again.skipped) == (0, 9)
        assert await observe(target) == await observe(src)

    log = StreamId("log", "resumed")
    async with MemoryEventStore() as src2:
        await src2.append(log, [ev(0), ev(1), ev(2)], NO_STREAM)
        await src2.set_retention(log, Retention(truncate_before=2))
        partial = await _lines(src2)
        await src2.append(log, [ev(3), ev(4)], 2)
        whole = await _lines(src2)
    await import_events(target, partial)
    resumed = await import_events(target, whole)  # one run 0..4: 0, 1 hidden, 2 shown, 3, 4 new
    assert (resumed.appended, resumed.skipped) == (2, 3)
    assert [e.sequence async for e in target.read_stream(log)] == [2, 3, 4]


@pytest.mark.parametrize(
    ("line", "message", "field"),
    [
        (
            '{"chronik_retention": {"domain": "log", "aggregate_id": "a", "max_count": 0}}',
            "line 3: max_count must be an int >= 1",
            "max_count",
        ),
        ('{"chronik_retention": {"domain": "log"}}', "line 3: invalid retention line", None),
        (
            '{"event_id": "e9", "domain": "log", "aggregate_id": "b", "sequence": 0, '
            '"type": "t", "position": "9", "payload": {}}',
            "line 4: an event after the retention lines",
            None,
        ),
    ],
)
async def test_bad_retention_lines_are_named(line: str, message: str, field: str | None) -> None:
    """A retention line with a bad rule, of a bad shape, or an event after the rules: an
    InvalidExport naming the line (and the field), the events before it imported."""
    header = '{"chronik_export": 2, "source": "memory", "exported_at": "t", "head": "1"}'
    event = (
        '{"event_id": "e1", "domain": "log", "aggregate_id": "a", "sequence": 0, '
        '"type": "t", "position": "1", "payload": {}}'
    )
    rules = '{"chronik_retention": {"domain": "log", "aggregate_id": "a", "max_count": 5}}'
    lines = [header, event, rules, line] if message.startswith("line 4") else [header, event, line]
    async with MemoryEventStore() as store:
        with pytest.raises(InvalidExport, match=message) as err:
            await import_events(store, [text + "\n" for text in lines])
        assert err.value.field == field or field is None
        assert await store.stream_version(StreamId("log", "a")) == 0
