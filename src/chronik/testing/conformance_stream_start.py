"""Conformance cases for starting a stream above sequence 0 (``chronik.store.stream_start``):
a mixin for the adapters' conformance test classes beside ``EventStoreConformance`` (whose
``store`` fixture it uses), run on adapters that declare ``supports_deletion`` and checked to
raise NotSupported on the others."""

from __future__ import annotations

import pytest

from chronik import ANY, NO_STREAM, StreamId
from chronik.errors import NotSupported, StreamDeleted, ValidationError, WrongExpectedVersion
from chronik.lifecycle.scavenger import scavenge
from chronik.store.base import EventStore
from chronik.store.retention import Retention
from chronik.testing.conformance_state import collect, ev

__all__ = ["StreamStartConformance"]


def _needs_deletion(store: EventStore) -> None:
    if not store.supports_deletion:
        pytest.skip(f"{type(store).__name__} does not declare supports_deletion")


async def _sequences(
    store: EventStore, stream: StreamId, start: int | None = None, backward: bool = False
) -> list[int]:
    return [e.sequence for e in await collect(store.read_stream(stream, start, backward))]


class StreamStartConformance:
    """A stream started at a sequence reads and appends as one whose prefix was scavenged."""

    async def test_start_is_refused_without_the_capability(self, store: EventStore) -> None:
        """A store without supports_deletion raises NotSupported and stores nothing."""
        if store.supports_deletion:
            pytest.skip("the store supports deletion")
        s = StreamId("start", "n0")
        with pytest.raises(NotSupported):
            await store.start_stream_at(s, 3)
        assert await store.stream_version(s) is None

    async def test_a_started_stream_continues_at_its_sequence(self, store: EventStore) -> None:
        """Until its first event it reads empty (a version-2 expectation fails); that event
        takes the sequence, and from then on versions and expectations are the source's."""
        _needs_deletion(store)
        s = StreamId("start", "s1")
        await store.start_stream_at(s, 3)
        assert await store.stream_version(s) is None
        assert await _sequences(store, s) == []
        assert (await store.get_retention(s)).truncate_before == 3
        with pytest.raises(WrongExpectedVersion):
            await store.append(s, [ev(9)], expected=2)
        first = await store.append(s, [ev(3), ev(4)], expected=NO_STREAM)
        assert (first.first_sequence, first.last_sequence) == (3, 4)
        assert await store.stream_version(s) == 4
        with pytest.raises(WrongExpectedVersion):
            await store.append(s, [ev(9)], expected=NO_STREAM)
        more = await store.append(s, [ev(5)], expected=4)
        assert more.first_sequence == 5
        assert await _sequences(store, s) == [3, 4, 5]
        assert await _sequences(store, s, backward=True) == [5, 4, 3]
        assert await _sequences(store, s, 4) == [4, 5]
        found = [e for e in await collect(store.read_all()) if e.stream == s]
        assert [e.sequence for e in found] == [3, 4, 5]
        assert [e.position for e in found] == sorted(e.position for e in found)

    async def test_a_started_stream_takes_an_any_append(self, store: EventStore) -> None:
        """An ANY append lands at the start sequence; the scavenger leaves the stream whole."""
        _needs_deletion(store)
        s = StreamId("start", "s2")
        await store.start_stream_at(s, 7)
        done = await store.append(s, [ev(7)], expected=ANY)
        assert done.first_sequence == 7
        await scavenge(store)
        assert await _sequences(store, s) == [7]
        assert await store.stream_version(s) == 7

    async def test_a_retried_start_is_a_no_op(self, store: EventStore) -> None:
        """Starting again at the same sequence before an event lands changes nothing; at
        another sequence, or once an event landed, it raises WrongExpectedVersion."""
        _needs_deletion(store)
        s = StreamId("start", "s3")
        await store.start_stream_at(s, 2)
        await store.start_stream_at(s, 2)
        with pytest.raises(WrongExpectedVersion):
            await store.start_stream_at(s, 5)
        await store.append(s, [ev(2)], expected=NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.start_stream_at(s, 2)
        assert await _sequences(store, s) == [2]

    async def test_only_a_stream_without_events_starts(self, store: EventStore) -> None:
        """A stream that holds or held events is refused (WrongExpectedVersion), a tombstone
        with StreamDeleted; one with rules only starts and keeps them."""
        _needs_deletion(store)
        live, soft, hard = StreamId("start", "l"), StreamId("start", "d"), StreamId("start", "h")
        await store.append(live, [ev(0)])
        await store.append(soft, [ev(0)])
        await store.delete_stream(soft)
        await store.append(hard, [ev(0)])
        await store.delete_stream(hard, hard=True)
        for stream in (live, soft):
            with pytest.raises(WrongExpectedVersion):
                await store.start_stream_at(stream, 1)
        with pytest.raises(StreamDeleted):
            await store.start_stream_at(hard, 2)
        assert await _sequences(store, live) == [0]
        ruled = StreamId("start", "r")
        await store.set_retention(ruled, Retention(max_count=5))
        await store.start_stream_at(ruled, 4)
        assert await store.get_retention(ruled) == Retention(None, 5, 4)
        assert (await store.append(ruled, [ev(4)])).first_sequence == 4

    async def test_bad_start_input_is_refused(self, store: EventStore) -> None:
        """A sequence that is not an int >= 1, or a stream that is not a StreamId, is a
        ValidationError naming the field, whatever the adapter."""
        s = StreamId("start", "v")
        for bad in (0, -1, True, "3", 2**62):
            with pytest.raises(ValidationError) as info:
                await store.start_stream_at(s, bad)  # type: ignore[arg-type]
            assert info.value.field == "sequence"
        with pytest.raises(ValidationError):
            await store.start_stream_at("start/v", 2)  # type: ignore[arg-type]
