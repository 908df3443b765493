"""Export and import (chronik.lifecycle) on the memory and SQLite stores: the format, round
trips, idempotence, resumed imports, conflicts and bad lines named by their line number."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import ConcurrencyError, ValidationError
from chronik.lifecycle import (
    FORMAT_VERSION,
    ImportConflict,
    InvalidExport,
    export_events,
    export_lines,
    import_events,
    move_store,
)
from chronik.lifecycle.export import ExportReport
from chronik.lifecycle.move import verify_move
from chronik.lifecycle.runs import BATCH_EVENTS
from chronik.store import EventStore, open_store


class Stopped(Exception):
    """What the test's progress callback raises to interrupt an import."""


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A factory of fresh, empty stores of one kind (memory or a new SQLite file)."""
    made: list[EventStore] = []

    def make() -> EventStore:
        n = len(made)
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/s{n}.db"
        made.append(open_store(url))
        return made[-1]

    return make


META = {"correlation_id": "r-1", "x": "y"}


@pytest.fixture
async def source(make_store: Any) -> AsyncIterator[EventStore]:
    """A store holding every kind of event: JSON and bytes payloads, metadata, tenants, tags
    (DCB), a JSON payload written as given (spaces) and one over several lines."""
    async with make_store() as store:
        c1 = chronik.StreamId("customer", "c1")
        await store.append(
            c1,
            [
                chronik.EventData("customer.registered", {"name": "Ada", "n": 1.5}, META),
                chronik.EventData("blob", b"\x00\xffraw", content_type="application/octet-stream"),
            ],
        )
        await store.append_tagged(
            [chronik.EventData("course.joined", {"c": 1}, tags=["student:s7", "course:c1"])]
        )
        await store.append(
            chronik.StreamId("customer", "c1", tenant="acme"),
            [chronik.EventData("spaced", b'{ "a" : [1, 2] }', schema_version=3)],
        )
        await store.append(c1, [chronik.EventData("lines", b'{\n  "b": "\\u00e9"\n}')])
        yield store


async def _export(store: EventStore, **kw: Any) -> bytes:
    out = io.BytesIO()
    await export_events(store, out, **kw)
    return out.getvalue()


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def _fields(e: chronik.RecordedEvent) -> tuple[Any, ...]:
    return (
        e.event_id, e.stream, e.sequence, e.type, e.schema_version, e.payload, e.content_type,
        dict(e.metadata), e.tags,
    )  # fmt: skip


async def _all(store: EventStore) -> list[tuple[Any, ...]]:
    return [_fields(e) async for e in store.read_all()]


async def _many(store: EventStore, count: int) -> None:
    """``count`` events over 7 streams and some tagged events, in units of 50."""
    for start in range(0, count, 50):
        async with store.transaction() as tx:
            for i in range(start, min(count, start + 50)):
                if i % 10 == 9:
                    tx.append_tagged([chronik.EventData("t", {"i": i}, tags=[f"k:{i % 3}"])])
                else:
                    stream = chronik.StreamId("s", f"a{i % 7}")
                    tx.append(stream, [chronik.EventData("e", {"i": i})])


async def test_round_trip_keeps_every_field_and_the_order(
    source: EventStore, make_store: Any
) -> None:
    """Ids, streams, tenants, sequences, types, versions, payload bytes, content types,
    metadata and tags come back identical, in the same global order."""
    data = await _export(source)
    async with make_store() as target:
        report = await import_events(target, io.BytesIO(data))
        assert await _all(target) == await _all(source)
        tagged = [e async for e in target.read_query(chronik.Query.of(tags=["course:c1"]))]
        assert [e.type for e in tagged] == ["course.joined"]
    assert (report.appended, report.skipped, report.streams, report.complete) == (5, 0, 3, True)


async def test_the_file_has_a_header_events_and_an_end(source: EventStore) -> None:
    """Line 1 names the version, the source kind and head; then one line per event with its
    fields; JSON payloads as JSON (verbatim), others as base64; the end line counts events."""
    rows = _lines(await _export(source))
    head = rows[0]
    assert head["chronik_export"] == FORMAT_VERSION and head["head"] == str(await source.head())
    assert head["source"] == source.url.split(":")[0] and head["exported_at"]
    first, blob, tagged, spaced, multi = rows[1:6]
    assert first["payload"] == {"name": "Ada", "n": 1.5}
    assert first["metadata"] == {"correlation_id": "r-1", "x": "y"}
    assert base64.b64decode(blob["payload"]) == b"\x00\xffraw"
    assert blob["content_type"] == "application/octet-stream"
    assert tagged["tags"] == ["course:c1", "student:s7"]
    assert tagged["aggregate_id"] == tagged["event_id"] and tagged["domain"] == "dcb"
    assert spaced["tenant"] == "acme" and spaced["schema_version"] == 3
    assert base64.b64decode(multi["payload_base64"]) == b'{\n  "b": "\\u00e9"\n}'
    assert [r["sequence"] for r in rows[1:6]] == [0, 1, 0, 0, 2]
    assert all(isinstance(r["position"], str) and r["recorded_at"] for r in rows[1:6])
    assert rows[6] == {"chronik_export_end": {"events": 5}} and len(rows) == 7


async def test_a_second_import_appends_nothing(source: EventStore, make_store: Any) -> None:
    """Importing the same file again skips every event and leaves the target as it was."""
    data = await _export(source)
    async with make_store() as target:
        await import_events(target, io.BytesIO(data))
        head = await target.head()
        again = await import_events(target, data.decode().splitlines(keepends=True))
        assert (again.appended, again.skipped) == (0, 5)
        assert await target.head() == head and await _all(target) == await _all(source)


async def test_an_interrupted_import_resumes(make_store: Any) -> None:
    """An import stopped after its first batch, then run again, appends only the rest."""
    async with make_store() as src, make_store() as target:
        await _many(src, 3 * BATCH_EVENTS)
        data = await _export(src)

        def stop(done: int) -> None:
            raise Stopped

        with pytest.raises(Stopped):
            await import_events(target, io.BytesIO(data), progress=stop)
        assert len(await _all(target)) == BATCH_EVENTS
        report = await import_events(target, io.BytesIO(data))
        assert (report.appended, report.skipped) == (2 * BATCH_EVENTS, BATCH_EVENTS)
        assert await _all(target) == await _all(src)


async def test_a_cut_file_imports_its_prefix_then_the_full_one_the_rest(
    source: EventStore, make_store: Any
) -> None:
    """An export without its end line imports what it holds and says it is incomplete; the
    complete file later skips what is stored (mid-stream included) and appends the rest."""
    lines = (await _export(source)).splitlines(keepends=True)
    async with make_store() as target:
        cut = await import_events(target, lines[:3])  # header + 2 events of customer/c1
        assert (cut.appended, cut.complete) == (2, False)
        whole = await import_events(target, lines)
        assert (whole.appended, whole.skipped, whole.complete) == (3, 2, True)
        assert await _all(target) == await _all(source)


async def test_a_line_cut_in_the_middle_is_named(source: EventStore, make_store: Any) -> None:
    """A file that ends inside a line is refused at that line, saying it was cut short."""
    data = await _export(source)
    async with make_store() as target:
        lines = data.splitlines(keepends=True)
        with pytest.raises(InvalidExport, match=r"line 3: .*cut short") as err:
            await import_events(target, [*lines[:2], lines[2][:40]])
        assert err.value.line == 3 and await target.head() is None


async def test_an_incremental_export_continues_a_target(
    source: EventStore, make_store: Any
) -> None:
    """An export --after the last exported position, imported on top, completes the target;
    into an empty store it is refused at its first line (its streams' start is missing)."""
    first = await _export(source)
    head = await source.head()
    await source.append(chronik.StreamId("customer", "c1"), [chronik.EventData("more", {})])
    more = await _export(source, after=head)
    assert len(_lines(more)) == 3 and _lines(more)[0]["after"] == str(head)
    async with make_store() as target, make_store() as empty:
        await import_events(target, io.BytesIO(first))
        report = await import_events(target, io.BytesIO(more))
        assert report.appended == 1 and await _all(target) == await _all(source)
        with pytest.raises(ImportConflict, match="line 2: stream customer/c1 has no events"):
            await import_events(empty, io.BytesIO(more))


async def test_a_conflicting_stream_is_named_and_its_batch_not_written(
    source: EventStore, make_store: Any
) -> None:
    """A target whose stream holds another event at a sequence of the file: ImportConflict
    naming that line, and no event of the batch is written."""
    data = await _export(source)
    async with make_store() as target:
        other = chronik.StreamId("customer", "c1", tenant="acme")
        await target.append(other, [chronik.EventData("mine", {})])
        message = "line 5: stream acme:customer/c1 already holds another event at sequence 0"
        with pytest.raises(ImportConflict, match=message) as err:
            await import_events(target, io.BytesIO(data))
        assert err.value.line == 5 and isinstance(err.value, ConcurrencyError)
        assert len(await _all(target)) == 1


async def test_same_id_other_content_is_a_conflict(source: EventStore, make_store: Any) -> None:
    """A re-import whose event has the stored id but another payload is named by its line."""
    data = await _export(source)
    async with make_store() as target:
        await import_events(target, io.BytesIO(data))
        changed = data.replace(b'"name":"Ada"', b'"name":"Bob"')
        with pytest.raises(ImportConflict, match=r"line 2: event .* different content"):
            await import_events(target, io.BytesIO(changed))


async def test_an_id_stored_in_another_stream_is_a_conflict(
    source: EventStore, make_store: Any
) -> None:
    """An event whose id the target holds in another stream is refused, naming its line."""
    data = await _export(source)
    event_id = _lines(data)[4]["event_id"]
    async with make_store() as target:
        mine = chronik.EventData("z", {}, event_id=event_id)
        await target.append(chronik.StreamId("x", "y"), [mine])
        with pytest.raises(ImportConflict, match="line 5: ") as err:
            await import_events(target, io.BytesIO(data))
        assert err.value.event_id == event_id and len(await _all(target)) == 1


def _event(**fields: Any) -> str:
    """An event line: a valid one, with ``fields`` changed (a None value drops the key)."""
    line = {"event_id": "e1", "domain": "d", "aggregate_id": "a", "sequence": 0, "type": "t"}
    line |= {"position": "1", "payload": {}}
    line |= fields
    return json.dumps({k: v for k, v in line.items() if v is not None})


END = '{"chronik_export_end": {"events": %d}}'


@pytest.mark.parametrize(
    ("lines", "message", "field"),
    [
        ([], "line 1: the input is empty", None),
        (["not json"], "line 1: not a chronik export", None),
        (
            ['{"chronik_export": 99, "source": "x", "exported_at": "t"}'],
            "line 1: export format version 99 is newer",
            "chronik_export",
        ),
        (['{"source": "x"}'], "line 1: not a chronik export header", "header"),
        (["{H}", "{oops"], "line 2: not JSON", None),
        (["{H}", _event(type=None)], "line 2: .*`type`", "type"),
        (["{H}", _event(sequence="0")], "line 2: .*`int`", "sequence"),
        (["{H}", _event(domain="D!")], "line 2: invalid domain", "domain"),
        (["{H}", _event(content_type="a/b", payload="%%")], "line 2: invalid base64", "payload"),
        (["{H}", _event(type="bad type")], "line 2: invalid event type", "type"),
        (["{H}", _event(metadata={"a": 1})], "line 2: invalid metadata", "metadata"),
        (["{H}", END % 3], "line 2: the end line says 3 events, the file holds 0", "events"),
        (["{H}", END % 0, "{}"], "line 3: a line after the end line", None),
    ],
)
async def test_bad_lines_are_named(
    make_store: Any, lines: list[str], message: str, field: str | None
) -> None:
    """Each malformed line is an InvalidExport (a ValidationError) naming the line and field."""
    header = '{"chronik_export": 1, "source": "memory", "exported_at": "t", "head": null}'
    text = [line.replace("{H}", header) + "\n" for line in lines]
    async with make_store() as target:
        with pytest.raises(InvalidExport, match=message) as err:
            await import_events(target, text)
        assert err.value.field == field and isinstance(err.value, ValidationError)
        assert await target.head() is None


async def test_a_repeated_id_in_one_file_is_named(make_store: Any) -> None:
    """The same event id on two lines of a batch is refused at the second line."""
    header = '{"chronik_export": 1, "source": "memory", "exported_at": "t"}'
    lines = [header, _event(), _event(sequence=1)]
    async with make_store() as target:
        with pytest.raises(InvalidExport, match="line 3: event id e1 appears twice"):
            await import_events(target, [line + "\n" for line in lines])


async def test_progress_is_reported(make_store: Any) -> None:
    """Export and import call progress with growing counts that end at the event count."""
    async with make_store() as src, make_store() as target:
        await _many(src, 2500)
        seen_out: list[int] = []
        data = await _export(src, progress=seen_out.append)
        seen_in: list[int] = []
        await import_events(target, io.BytesIO(data), progress=seen_in.append)
    for seen in (seen_out, seen_in):
        assert seen == sorted(seen) and seen[-1] == 2500 and len(seen) >= 3


async def test_the_export_stops_at_the_head_it_started_from(make_store: Any) -> None:
    """Events appended while an export runs are not in it: the file is a consistent cut."""
    async with make_store() as src:
        await _many(src, 1500)
        lines = export_lines(src)
        header = json.loads(await anext(lines))
        await anext(lines)
        await _many(src, 100)
        rest = [line async for line in lines]
    assert len(rest) == 1500 and json.loads(rest[-1]) == {"chronik_export_end": {"events": 1500}}
    assert json.loads(rest[-2])["position"] == header["head"]


async def test_move_between_the_two_kinds_keeps_ids_and_order(make_store: Any) -> None:
    """move_store copies and verifies; a target holding other events first still verifies."""
    async with make_store() as src, make_store() as target:
        await _many(src, 700)
        await target.append(chronik.StreamId("own", "x"), [chronik.EventData("o", {})])
        done = await move_store(src, target)
        assert done.verified is True and done.problem is None
        assert (done.imported.appended, done.target_events) == (700, 701)
        assert (await _all(target))[1:] == await _all(src)


async def test_verify_reports_a_difference(make_store: Any) -> None:
    """A move whose target lacks an event (stored elsewhere) fails its check, saying which."""
    async with make_store() as src, make_store() as target:
        await _many(src, 20)
        await move_store(src, target, verify=False)
        head = await src.head()
        await src.append(chronik.StreamId("late", "l"), [chronik.EventData("x", {})])
        done = await move_store(src, target, after=head)
        assert (done.verified, done.exported.events, done.imported.appended) == (True, 1, 1)
        await src.append(chronik.StreamId("late", "l2"), [chronik.EventData("y", {})])
        problem, _, _ = await verify_move(src, target, ExportReport(22, await src.head(), None))
        assert problem is not None and "number 22 of 22" in problem and "missing" in problem


def test_the_cli_exports_imports_and_moves(tmp_path: Path) -> None:
    """export writes the file to stdout, import and move print their report as one JSON
    line (JSON Lines), and a second import skips everything."""
    from typer.testing import CliRunner

    from chronik.cli import _build

    a, b, c = (f"sqlite:///{tmp_path}/{n}.db" for n in "abc")

    async def make() -> None:
        async with open_store(a) as store:
            await _many(store, 120)

    asyncio.run(make())
    runner = CliRunner()
    done = runner.invoke(_build(), ["export", "--store", a, "--no-progress"])
    assert done.exit_code == 0 and "exported 120 events" in done.stderr
    dump = tmp_path / "a.jsonl"
    dump.write_bytes(done.stdout_bytes)
    for appended in (120, 0):
        done = runner.invoke(_build(), ["import", str(dump), "--store", b, "--json"])
        assert done.exit_code == 0, done.output
        [line] = done.stdout.splitlines()
        report = json.loads(line)
        assert (report["appended"], report["skipped"]) == (appended, 120 - appended)
    done = runner.invoke(_build(), ["move", "--from", b, "--to", c, "--json"])
    assert done.exit_code == 0, done.output
    [line] = done.stdout.splitlines()
    assert json.loads(line)["verified"] is True
    done = runner.invoke(_build(), ["import", str(tmp_path / "missing.jsonl"), "--store", b])
    assert done.exit_code == 1 and done.stderr.startswith("error: ")


async def test_an_empty_store_exports_a_header_and_an_end(make_store: Any) -> None:
    """An empty store's export has no event line; importing it appends nothing, completely."""
    async with make_store() as empty, make_store() as target:
        data = await _export(empty)
        rows = _lines(data)
        assert rows[0]["head"] is None and rows[1:] == [{"chronik_export_end": {"events": 0}}]
        report = await import_events(target, io.BytesIO(data))
        assert (report.appended, report.skipped, report.complete) == (0, 0, True)


async def test_backup_copies_a_sqlite_store_and_refuses_the_rest(tmp_path: Path) -> None:
    """backup_sqlite writes a store that opens with the same events; it refuses another kind
    of store (naming the docs), a missing store, and an existing file unless overwrite."""
    from chronik.errors import ConfigurationError, StoreUnavailable
    from chronik.lifecycle import backup_sqlite

    url = f"sqlite:///{tmp_path}/live.db"
    async with open_store(url) as live:
        await _many(live, 300)
        pages: list[tuple[int, int]] = []
        done = await backup_sqlite(url, tmp_path / "bk.db", progress=lambda *p: pages.append(p))
        assert done.head == await live.head() and pages[-1][0] == pages[-1][1] > 0
        async with open_store(f"sqlite:///{tmp_path}/bk.db", create=False) as copy:
            assert await _all(copy) == await _all(live)
        with pytest.raises(ConfigurationError, match="exists: pass --force"):
            await backup_sqlite(url, tmp_path / "bk.db")
        again = await backup_sqlite(url, tmp_path / "bk.db", overwrite=True)
        assert again.bytes == (tmp_path / "bk.db").stat().st_size
    with pytest.raises(ConfigurationError, match=r"backup-export\.md"):
        await backup_sqlite("memory://", tmp_path / "m.db")
    with pytest.raises(StoreUnavailable, match="no store at"):
        await backup_sqlite(f"sqlite:///{tmp_path}/none.db", tmp_path / "n.db")
    assert sorted(p.name for p in tmp_path.iterdir() if "bk" in p.name) == ["bk.db"]
