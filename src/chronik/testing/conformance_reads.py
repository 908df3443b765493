"""Store conformance, the reading half: read_stream, read_all, list_streams and what comes back.

Part of ``EventStoreConformance`` (``chronik.testing.conformance``), which every adapter's suite
subclasses; these cases need its ``store`` fixture. Imports chronik's public API, the store port
and ``chronik.testing.conformance_state`` (the shared ``ev``/``collect`` helpers).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.base import EventStore
from chronik.testing.conformance_state import collect, ev

__all__ = ["ReadConformance"]


class ReadConformance:
    """Reads: order, bounds, filters, pages, and payloads and metadata as they were stored."""

    # --- read_stream and read_all -----------------------------------------------------------------

    async def test_read_stream_directions_bounds_and_pages(self, store: EventStore) -> None:
        """read_stream pages over 2,500 events forward and backward, from any sequence."""
        s = StreamId("big", "b1")
        for start in range(0, 2500, 500):
            await store.append(s, [ev(start + i) for i in range(500)])
        seqs = [e.sequence for e in await collect(store.read_stream(s))]
        assert seqs == list(range(2500))
        back = [e.sequence for e in await collect(store.read_stream(s, backward=True))]
        assert back == list(range(2499, -1, -1))
        assert [e.sequence for e in await collect(store.read_stream(s, 1998, limit=5))] == [
            1998,
            1999,
            2000,
            2001,
            2002,
        ]
        assert [
            e.sequence for e in await collect(store.read_stream(s, 1001, backward=True, limit=3))
        ] == [1001, 1000, 999]
        assert len(await collect(store.read_stream(s, 1200, limit=1500))) == 1300
        assert await collect(store.read_stream(s, 2500)) == []
        assert await collect(store.read_stream(s, limit=0)) == []
        assert await collect(store.read_stream(StreamId("big", "missing"))) == []
        assert await collect(store.read_stream(StreamId("big", "missing"), backward=True)) == []

    async def test_read_stream_payloads_match_the_events(self, store: EventStore) -> None:
        """read_stream_payloads gives (sequence, type, JSON schema version, payload) pages that
        agree with read_stream; a payload of another content type never looks like JSON at a
        schema version; a missing stream gives no rows."""
        s = StreamId("rows", "r1")
        for start in (0, 750):
            await store.append(
                s, [ev(i, "t.a" if i % 2 else "t.b") for i in range(start, start + 750)]
            )
        await store.append(
            s,
            [
                EventData("t.v2", {"n": 1}, schema_version=2),
                EventData("t.bin", b"\x00\x01", content_type="application/octet-stream"),
            ],
        )
        events = await collect(store.read_stream(s))
        rows = await store.read_stream_payloads(s)
        rows += await store.read_stream_payloads(s, rows[-1][0] + 1)
        assert len(rows) == len(events) == 1502
        for row, e in zip(rows, events, strict=True):
            assert (row[0], row[1], bytes(row[3])) == (e.sequence, e.type, e.payload)
            if e.content_type == chronik.JSON:
                assert row[2] == e.schema_version
            else:
                assert row[2] not in (1, 2) and row[2] != e.schema_version
        assert [r[0] for r in await store.read_stream_payloads(s, 1499, limit=2)] == [1499, 1500]
        assert await store.read_stream_payloads(s, 1502) == []
        assert await store.read_stream_payloads(StreamId("rows", "missing")) == []

    async def test_read_all_order_bounds_filters_and_pages(self, store: EventStore) -> None:
        """read_all is in commit order both ways, honours after/before/limit and filters."""
        assert await store.head() is None
        for i in range(1200):
            domain = "alpha" if i % 3 else "beta"
            etype = "t.even" if i % 2 == 0 else "t.odd"
            await store.append(StreamId(domain, f"s{i % 7}"), [ev(i, etype)])
        events = await collect(store.read_all())
        assert [e.json()["n"] for e in events] == list(range(1200))
        positions = [e.position for e in events]
        assert all(a < b for a, b in itertools.pairwise(positions))
        assert await store.head() == positions[-1]
        newest = await collect(store.read_all(backward=True))
        assert newest == events[::-1]
        assert await collect(store.read_all(after=positions[9], limit=3)) == events[10:13]
        assert await collect(store.read_all(before=positions[10], backward=True, limit=3)) == [
            events[9],
            events[8],
            events[7],
        ]
        assert await collect(store.read_all(after=positions[5], before=positions[9])) == events[6:9]
        beta = await collect(store.read_all(domains=["beta"]))
        assert beta == [e for e in events if e.stream.domain == "beta"]
        odd = await collect(store.read_all(types=["t.odd"]))
        assert odd == [e for e in events if e.type == "t.odd"]
        both = await collect(store.read_all(domains=["beta"], types=["t.odd"], backward=True))
        assert both == [e for e in newest if e.stream.domain == "beta" and e.type == "t.odd"]
        assert await collect(store.read_all(domains=["nobody"])) == []
        assert await collect(store.read_all(after=positions[-1])) == []

    async def test_appends_and_units_are_never_interleaved(self, store: EventStore) -> None:
        """Concurrent batch appends and units each occupy a contiguous run of read_all."""

        async def batch(k: int) -> None:
            await store.append(StreamId("batch", f"b{k}"), [ev(k) for _ in range(7)])

        async def unit(k: int) -> None:
            async with store.transaction() as tx:
                tx.append(StreamId("unit", f"u{k}"), [ev(k) for _ in range(3)])
                tx.append(StreamId("unit", f"v{k}"), [ev(k) for _ in range(4)])

        await asyncio.gather(*(batch(k) for k in range(15)), *(unit(k + 100) for k in range(15)))
        labels = [e.json()["n"] for e in await collect(store.read_all())]
        runs = [labels[i : i + 7] for i in range(0, len(labels), 7)]
        assert len(runs) == 30
        assert all(len(set(r)) == 1 for r in runs)
        assert sorted(r[0] for r in runs) == sorted([*range(15), *range(100, 115)])

    # --- what comes back ----------------------------------------------------------------------

    async def test_bytes_payloads_are_stored_as_they_are(self, store: EventStore) -> None:
        """Bytes with a content type round-trip untouched; JSON bytes are stored verbatim."""
        s = StreamId("blob", "b1")
        secret = bytes(range(256))
        await store.append(
            s,
            [
                EventData("secret.sealed", secret, content_type="application/octet-stream"),
                EventData("json.raw", b'{"b": 1,  "a": 2}'),
            ],
        )
        sealed, raw_json = await collect(store.read_stream(s))
        assert sealed.payload == secret and sealed.content_type == "application/octet-stream"
        assert raw_json.payload == b'{"b": 1,  "a": 2}' and raw_json.content_type == chronik.JSON
        with pytest.raises(chronik.ValidationError):
            await store.append(s, [EventData("t", {"a": 1}, content_type="text/plain")])

    async def test_metadata_and_timestamps_round_trip(self, store: EventStore) -> None:
        """Metadata keys come back as stored; recorded_at is aware UTC and close to now."""
        s = StreamId("meta", "m1")
        md = {"correlation_id": "corr-1", "causation_id": "cmd-1", "user": "ada"}
        await store.append(s, [EventData("t", {}, md), EventData("t", {})])
        with_md, without = await collect(store.read_stream(s))
        assert dict(with_md.metadata) == md and with_md.metadata.correlation_id == "corr-1"
        assert dict(without.metadata) == {}
        assert with_md.recorded_at.tzinfo is UTC
        assert abs((datetime.now(UTC) - with_md.recorded_at).total_seconds()) < 60

    async def test_list_streams_filters_and_pages(self, store: EventStore) -> None:
        """list_streams yields each stream once with its version, by domain and prefix."""
        for i in range(1100):
            await store.append(StreamId("many" if i % 2 else "few", f"id-{i}"), [ev()])
        await store.append(StreamId("few", "id-0"), [ev()])
        infos = [i async for i in store.list_streams()]
        assert len(infos) == 1100 and len({i.stream for i in infos}) == 1100
        few = [i async for i in store.list_streams(domain="few", prefix="id-0")]
        assert [(i.stream.aggregate_id, i.version) for i in few] == [("id-0", 1)]
        assert len([i async for i in store.list_streams(domain="many", limit=10)]) == 10

    # --- committed_types ------------------------------------------------------------------------

    async def test_committed_types_never_hide_an_event(self, store: EventStore) -> None:
        """Where a store answers ``committed_types(after)`` (None: it cannot tell), the answer
        covers every event after ``after`` up to the position it names, which is stored."""
        types = ["kind.a", "kind.b", "kind.c"]
        store.committed_types(chronik.Position(0))  # a log notes appends once a reader asks
        for i in range(12):
            s = StreamId("typed", f"t{i % 4}")
            batch = [ev(i, types[(i + k) % 3]) for k in range(1 + i % 3)]
            await store.append(s, batch, expected=chronik.ANY)
        events = await collect(store.read_all())
        for e in [None, *events]:
            after = chronik.Position(0) if e is None else e.position
            known = store.committed_types(after)
            if known is None:
                continue
            upto, found = known
            assert any(x.position == upto for x in events)
            between = {x.type for x in events if after < x.position <= upto}
            assert between <= found, (after, upto, between, found)
