"""The scavenger's reach into the archive: deletions and retention remove archived events too.

When a store has an archive attached (``store.attach_archive``), a scavenger run
(``chronik.lifecycle.scavenger.scavenge``) works out each stream's truncation point over its
archived and hot events alike (``max_age`` looks at archived record times too) and, after the hot
batches, removes every archived event below those points in one call
(``Archive.remove_below``: one new blob set per segment touched, one manifest), keeping a
stream's last deletion event as the hot log does, then collects the old blobs. Streams whose
every event is archived (no hot event left, so ``retention_page`` does not list them) are found
in the archive's indexes. A run that stops between the hot deletes and the archive rewrite
leaves the archive's events readable as before; the next run removes them (the truncation
points are recorded in the hot store first, and only move forward). The archive has one writer:
the rewrite runs under the archiver's lease (or in the process that holds it, sharing its
archive); while another process holds it the run reports it (``busy``) and a later run
completes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from chronik.errors import LeaseHeld
from chronik.lifecycle.archiver import LEASE as ARCHIVER_LEASE
from chronik.messages import StreamId
from chronik.store.deletion import STREAM_DELETED
from chronik.store.retention import Retention, StreamRetention

if TYPE_CHECKING:
    from chronik.archive.archive import Archive
    from chronik.store.base import EventStore

__all__ = ["ArchivePrune"]

_LEASE_TTL: Final = 300.0


class ArchivePrune:
    """One scavenger run's view of the archive: the archived streams and the bounds to apply."""

    def __init__(
        self,
        store: EventStore,
        archive: Archive,
        ranges: dict[StreamId, tuple[int, int]],
        now_us: int,
    ) -> None:
        self.store, self.archive, self.now_us = store, archive, now_us
        self.ranges = ranges  # every archived stream: (first, last) archived sequence
        self.unseen = dict(ranges)  # archived streams the hot scan has not listed (yet)
        self.bounds: dict[StreamId, int] = {}
        self.busy: str | None = None  # why the archive was left alone (another writer)

    @classmethod
    async def start(cls, store: EventStore, now_us: int) -> ArchivePrune | None:
        """The run's view of ``store``'s archive, or None when it has none attached."""
        archive = store.archive
        if archive is None:
            return None
        await archive.refresh()  # the archiver may have sealed since this process looked
        return cls(store, archive, await archive.stream_ranges(), now_us)

    async def target(self, info: StreamRetention, default: Retention | None) -> int:
        """The first sequence ``info``'s stream may keep, its archived events counted."""
        rules = info.retention.over(default)
        before = info.truncate_before
        if rules.max_count is not None:
            before = max(before, info.version + 1 - rules.max_count)
        if rules.max_age is not None:
            cutoff = self.now_us - int(rules.max_age * 1_000_000)
            since: int | None = None
            if info.stream in self.ranges:
                async for e in self.archive.read_stream(info.stream, before):
                    if e.recorded_at_us >= cutoff:
                        since = e.sequence
                        break
            if since is None:
                since = await self.store.first_sequence_since(info.stream, cutoff)
            before = max(before, info.version + 1 if since is None else since)
        return before

    def visit(self, stream: StreamId, before: int) -> None:
        """Note that the hot scan reached ``stream`` with truncation point ``before``."""
        self.unseen.pop(stream, None)
        found = self.ranges.get(stream)
        if found is not None and found[0] < before:
            self.bounds[stream] = max(before, self.bounds.get(stream, 0))

    async def record(self, stream: StreamId, before: int, truncated: int) -> None:
        """Move ``stream``'s truncation point in the hot store to ``before`` (from
        ``truncated``) when only archived events lie below it (the hot batches do it
        otherwise): durable before the archive is touched."""
        if stream in self.bounds and before > truncated:
            await self.store.scavenge_stream(stream, before, 1)

    async def finish(
        self,
        rules: Mapping[str, Retention],
        default_for: Callable[..., Retention | None],
        dry_run: bool,
    ) -> None:
        """Add the bounds of the archived streams the hot scan did not list (recording their
        truncation points unless ``dry_run``)."""
        for stream, (first, last) in list(self.unseen.items()):
            own = await self.store.get_retention(stream)
            truncated = own.truncate_before or 0
            info = StreamRetention(stream, last, truncated, own, False, first)
            before = await self.target(info, default_for(rules, stream))
            self.visit(stream, before)
            if not dry_run:
                await self.record(stream, before, truncated)

    def would_remove(self) -> int:
        """How many archived events the bounds cover (a dry run's count)."""
        total = 0
        for stream, before in self.bounds.items():
            first, last = self.ranges[stream]
            total += max(0, min(before, last + 1) - first)
        return total

    async def apply(self) -> int:
        """Remove the archived events below the bounds (one archive rewrite), then collect
        the old blobs; the number removed. The archive has one writer: this takes the
        archiver's lease for the rewrite (or finds it held in this process, whose archiver
        shares the attached archive and its lock); while another process holds it nothing is
        removed and ``busy`` says why (the truncation points are recorded in the hot store: a
        later run completes)."""
        if not self.bounds:
            return 0
        here = f"{socket.gethostname()}:{os.getpid()}:"
        owner = f"{here}scavenger"
        try:
            await self.store.acquire_lease(ARCHIVER_LEASE, owner, _LEASE_TTL)
            taken = True
        except LeaseHeld:
            held = await self.store.read_leases(ARCHIVER_LEASE)
            if not any(lease.owner.startswith(here) for lease in held):
                who = ", ".join(lease.owner for lease in held)
                self.busy = (
                    f"the archiver lease is held by {who}: the archived events below the "
                    "truncation points are removed by a later run, while it is free or held "
                    "in the scavenger's process"
                )
                return 0
            taken = False
        try:
            removed = await self.archive.remove_below(self.bounds, keep_last=STREAM_DELETED)
            await self.archive.collect_garbage()
        finally:
            if taken:
                await self.store.release_lease(ARCHIVER_LEASE, owner)
        return removed
