"""The lease conformance suite: what ``chronik.store.leases`` means, on every adapter.

Mix ``LeaseConformance`` into a test class that has a ``store`` fixture (an opened, empty
store), as ``EventStoreConformance`` subclasses do::

    class TestMyStore(EventStoreConformance, LeaseConformance): ...
"""

from __future__ import annotations

import asyncio
import math

import pytest

from chronik import NO_STREAM, Position, StreamId
from chronik.errors import CheckpointFenced, LeaseHeld, ValidationError, WrongExpectedVersion
from chronik.store import leases
from chronik.store.base import EventStore
from chronik.testing.conformance_state import ev

__all__ = ["LeaseConformance"]

_SHORT = 0.05  # seconds: a ttl that ends within the test
_PAST = 0.2  # seconds to sleep until a _SHORT lease has surely ended


class LeaseConformance:
    """Leases: acquire, renew, refuse, take over, release, fence, commit with the unit."""

    async def test_acquire_renew_and_read_the_holder(self, store: EventStore) -> None:
        """A new lease has epoch 1; its holder renews it at the same epoch and is read back
        with its owner, partition and published version."""
        assert await store.acquire_lease("job", "one", 5.0, 3, version=7) == 1
        assert await store.acquire_lease("job", "one", 5.0, 3, version=8) == 1
        (held,) = await store.read_leases("job")
        assert (held.name, held.partition, held.owner, held.epoch) == ("job", 3, "one", 1)
        assert held.version == 8 and held.valid()
        assert await leases.holders(store, "other") == []

    async def test_another_owner_is_refused_while_the_lease_is_valid(
        self, store: EventStore
    ) -> None:
        """While one owner's lease is unexpired another gets LeaseHeld (None from
        ``leases.acquire``), and the holder keeps the lease unchanged."""
        await store.acquire_lease("job", "one", 5.0)
        with pytest.raises(LeaseHeld):
            await store.acquire_lease("job", "two", 5.0)
        assert await leases.acquire(store, "job", "two", 5.0) is None
        (held,) = await store.read_leases("job")
        assert (held.owner, held.epoch) == ("one", 1)
        assert await store.acquire_lease("job", "two", 5.0, 1) == 1  # another partition

    async def test_takeover_after_expiry_bumps_the_epoch(self, store: EventStore) -> None:
        """Once a lease has expired another owner takes it with the next epoch, and the former
        holder is refused from then on."""
        assert await store.acquire_lease("job", "one", _SHORT) == 1
        await asyncio.sleep(_PAST)
        assert await store.acquire_lease("job", "two", 5.0) == 2
        with pytest.raises(LeaseHeld):
            await store.acquire_lease("job", "one", 5.0)

    async def test_release_frees_the_lease_for_another_owner(self, store: EventStore) -> None:
        """A released lease is free at once (next epoch for a new owner); another owner's
        release leaves the lease alone."""
        await store.acquire_lease("job", "one", 5.0)
        await store.release_lease("job", "two")
        with pytest.raises(LeaseHeld):
            await store.acquire_lease("job", "two", 5.0)
        await leases.release(store, "job", "one")
        (held,) = await store.read_leases("job")
        assert not held.valid()
        assert await store.acquire_lease("job", "two", 5.0) == 2

    async def test_a_stale_epoch_is_fenced(self, store: EventStore) -> None:
        """After a takeover, the former holder's checkpoint (old epoch) is refused with
        CheckpointFenced and its lease write with LeaseHeld; nothing of its unit is written."""
        old = await store.acquire_lease("proc", "one", _SHORT)
        await store.save_checkpoint("proc", Position(1), 0, old)
        await asyncio.sleep(_PAST)
        new = await store.acquire_lease("proc", "two", 5.0)
        assert new == old + 1
        await store.save_checkpoint("proc", Position(2), 0, new)
        with pytest.raises(CheckpointFenced):
            await store.save_checkpoint("proc", Position(3), 0, old)
        stream = StreamId("fenced", "f1")
        with pytest.raises(LeaseHeld):
            async with store.transaction() as tx:
                tx.append(stream, [ev(0)], NO_STREAM)
                tx.acquire_lease("proc", "one", 5.0)
        assert await store.stream_version(stream) is None
        checkpoint = await store.load_checkpoint("proc")
        assert checkpoint is not None and checkpoint.position == Position(2)

    async def test_a_lease_commits_and_rolls_back_with_its_unit(self, store: EventStore) -> None:
        """A lease taken in a unit of work is stored with the unit's appends, and not at all
        when another part of the unit fails."""
        a, b = StreamId("unit", "a"), StreamId("unit", "b")
        async with store.transaction() as tx:
            tx.append(a, [ev(0)], NO_STREAM)
            tx.acquire_lease("job", "one", 5.0)
        assert await store.stream_version(a) == 0
        assert [h.owner for h in await store.read_leases("job")] == ["one"]
        with pytest.raises(WrongExpectedVersion):
            async with store.transaction() as tx:
                tx.acquire_lease("other", "one", 5.0)
                tx.release_lease("job", "one")
                tx.append(b, [ev(1)], 5)
        assert await store.read_leases("other") == []
        assert (await store.read_leases("job"))[0].valid()

    async def test_two_concurrent_acquirers_exactly_one_wins(self, store: EventStore) -> None:
        """Owners racing for a free lease: exactly one gets it, the others get None."""
        owners = [f"owner-{i}" for i in range(8)]
        epochs = await asyncio.gather(*(leases.acquire(store, "race", o, 5.0) for o in owners))
        winners = [o for o, e in zip(owners, epochs, strict=True) if e is not None]
        assert len(winners) == 1 and epochs.count(1) == 1
        (held,) = await store.read_leases("race")
        assert held.owner == winners[0]

    @pytest.mark.parametrize(
        ("name", "owner", "ttl", "partition", "field"),
        [
            ("", "one", 1.0, 0, "name"),
            ("job", "a\x00b", 1.0, 0, "owner"),
            ("job", "one", -1.0, 0, "ttl"),
            ("job", "one", math.nan, 0, "ttl"),
            ("job", "one", 1.0, -1, "partition"),
        ],
    )
    async def test_bad_lease_input_names_the_field(
        self, store: EventStore, name: str, owner: str, ttl: float, partition: int, field: str
    ) -> None:
        """A bad name, owner, ttl or partition raises ValidationError naming it; nothing is
        written."""
        with pytest.raises(ValidationError) as info:
            await store.acquire_lease(name, owner, ttl, partition)
        assert info.value.field == field
        assert await store.read_leases() == []
