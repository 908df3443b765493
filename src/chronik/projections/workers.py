"""Partition workers: processes share the partitions of a projection out among themselves.

Every worker keeps a membership lease (``{projection}:member:{owner}``) and, each heartbeat,
counts the live members: shares are partitions / members, the first (partitions mod members)
workers by owner name taking one more. It gives up partitions
beyond its share (after the current batch) and claims free ones (no lease, or an expired one)
up to it. Leases are taken and checked by the database clock, and every checkpoint write of a
partition carries its lease epoch, so two owners never write one partition: a worker that was
paused past its lease finds its next unit of work refused and stands by. A worker whose
projection version is older than another member's, or than the one that serves, steps aside
for good (until restarted): the newest version builds and serves, as one processor would.

The split: the projection's ``partitions``, unless a repartition (``chronik projections
repartition``, see chronik.projections.repartition) set another for its version. A worker reads
that layout at each heartbeat; when it changes, the worker stops its processors (releasing
their leases) and runs the new split, its processors holding the leases as ``r{round}~owner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import time
from types import TracebackType
from typing import Any, Self

from chronik.errors import ConfigurationError, ValidationError
from chronik.messages import Position
from chronik.projections.bookkeeping import load_plan
from chronik.projections.lanes import checkpoint_name
from chronik.projections.processor import ProjectionProcessor
from chronik.projections.projection import Projection
from chronik.projections.repartition import load_layout
from chronik.store import leases
from chronik.store.base import EventStore

__all__ = ["PartitionWorker"]

log = logging.getLogger("chronik.projections")


class PartitionWorker:
    """This process's share of a partitioned projection; ``async with`` it."""

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        owner: str | None = None,
        heartbeat: float = 1.0,
        lease_ttl: float = 10.0,
    ) -> None:
        if projection.partitions < 2:
            raise ConfigurationError(f"{projection.name} has one partition: run a processor")
        if lease_ttl <= 2 * heartbeat:
            raise ValidationError("lease_ttl must be more than twice the heartbeat")
        self.store = store
        self.projection = projection
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = heartbeat
        self.lease_ttl = lease_ttl
        self.layout = (projection.partitions, 0)  # the split it runs and its round
        self.processors = self._processors(*self.layout)
        self._replaced = asyncio.Event()  # set when a new split's processors replaced the old
        self._member = f"{projection.name}:member:{self.owner}"
        self._version = projection.version  # published as the membership lease's version
        self._outdated = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _processors(self, partitions: int, round_: int) -> list[ProjectionProcessor]:
        """Processors (standing by) for one split of the projection."""
        p = self.projection
        if partitions != p.partitions:
            p = copy.copy(p)
            p.partitions = partitions
        owner = self.owner if round_ == 0 else f"r{round_}~{self.owner}"
        return [
            ProjectionProcessor(
                self.store,
                p,
                owner=owner,
                heartbeat=self.heartbeat,
                lease_ttl=self.lease_ttl,
                partition=k,
                wanted=False,
            )
            for k in range(partitions)
        ]

    async def _adopt(self, started: bool) -> None:
        """Run the split a repartition set for this version (or the projection's own)."""
        layout = await load_layout(self.store, self.projection.name)
        want = (self.projection.partitions, 0)
        if layout is not None and layout.version == self.projection.version:
            want = (layout.partitions, layout.round)
        if want == self.layout:
            return
        log.info("%s: %s runs %d partitions now", self.owner, self.projection.name, want[0])
        if started:
            await asyncio.gather(*(p.stop() for p in self.processors))
        self.layout, self.processors = want, self._processors(*want)
        if started:
            for proc in self.processors:
                await proc.start()
            self._replaced.set()

    @property
    def owned(self) -> list[int]:
        """The partitions this worker holds now."""
        return [p.partition for p in self.processors if p.epoch is not None]

    async def start(self) -> None:
        """Join (membership lease), start the processors standing by, then balance."""
        if self._task is None or (self._task.done() and not self._stopping):
            await self._join()
            with contextlib.suppress(Exception):  # else the next heartbeat adopts it
                await self._adopt(started=False)
            for proc in self.processors:
                await proc.start()
            await self.balance()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float | None = None) -> None:
        """Release every partition (after its batch, cancelled after ``grace`` s) and the
        membership."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await asyncio.gather(*(p.stop(grace) for p in self.processors))
        with contextlib.suppress(Exception):
            await leases.release(self.store, self._member, self.owner)

    async def join(self) -> None:
        """Wait until this worker's loops end; raise what ended one unless it was stopped."""
        while True:  # again whenever a repartition replaced the processors
            self._replaced.clear()
            waits = [asyncio.ensure_future(p.join()) for p in self.processors]
            if self._task is not None:
                waits.append(asyncio.ensure_future(self._join_balancer(self._task)))
            replaced = asyncio.ensure_future(self._replaced.wait())
            try:
                pending: set[asyncio.Future[Any]] = {*waits, replaced}
                while pending != {replaced}:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if t is not replaced and (exc := t.exception()) is not None:
                            raise exc
                    if replaced in done:
                        break
                else:
                    return  # every loop ended
            finally:
                for w in (*waits, replaced):
                    w.cancel()

    async def _join_balancer(self, task: asyncio.Task[None]) -> None:
        await asyncio.wait([task])
        if not self._stopping and not task.cancelled() and (exc := task.exception()):
            raise exc

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<PartitionWorker {self.projection.name} {self.owner} owns {self.owned}>"

    async def wait_for(self, position: Position) -> None:
        """Return once every partition (whichever process owns it) has applied ``position``.

        Partitions owned here answer at once; others through their checkpoints (of the
        generation the plan serves) in the database, which an idle partition advances at its
        heartbeat.
        """
        pending, name = list(self.processors), self.projection.name
        seen: tuple[int, tuple[int, int]] = (0, self.layout)
        while True:
            signal = self.store.change_signal()
            plan = await load_plan(self.store, name)
            generation = plan.generation if plan is not None else 1
            if (generation, self.layout) != seen:  # a new generation or split: ask anew
                pending, seen = list(self.processors), (generation, self.layout)
            left = []
            for proc in pending:
                lane = proc.active
                mine = lane.applied if proc.epoch is not None else None
                if mine is None or mine < position or lane.generation != generation:
                    cp = await self.store.load_checkpoint(
                        checkpoint_name(name, generation), proc.partition
                    )
                    if cp is None or cp.position < position:
                        left.append(proc)
            if not left:
                return
            pending = left
            with self.store.watching(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), self.heartbeat)

    @property
    def outdated(self) -> bool:
        """Whether a newer version of the projection runs or serves: this worker steps aside."""
        return self._outdated or any(p.outdated for p in self.processors)

    async def _join(self) -> None:
        """Claim or renew the membership (with this worker's projection version)."""
        await leases.acquire(
            self.store, self._member, self.owner, self.lease_ttl, version=self._version
        )

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(Exception):  # a store hiccup: try again next heartbeat
                await self._join()
                await self._adopt(started=True)
                await self.balance()
            if self.outdated:  # older code than runs or serves: leave the partitions to it
                await self._step_aside()
                return

    async def _step_aside(self) -> None:
        """Give up every partition and the membership, for good (until restarted)."""
        log.warning(
            "%s: version %s of %s is older than one that runs or serves; this worker leaves "
            "its partitions to workers running the newest",
            self.owner,
            self.projection.version,
            self.projection.name,
        )
        for proc in self.processors:
            proc.release()
        with contextlib.suppress(Exception):
            await leases.release(self.store, self._member, self.owner)

    async def balance(self) -> None:
        """Give up partitions beyond the fair share; want free ones up to it."""
        rows = await leases.holders(self.store)
        now_us = time.time_ns() // 1000
        prefix = f"{self.projection.name}:member:"
        versions = {
            r.owner: r.version for r in rows if r.name.startswith(prefix) and r.valid(now_us)
        } | {self.owner: self._version}
        newest = max(versions.values())
        if self._version < newest:  # a newer version runs: it builds and serves from now on
            self._outdated = True
            return
        members = {owner for owner, version in versions.items() if version == newest}
        held = {
            r.partition: r.owner for r in rows if r.name == self.projection.name and r.valid(now_us)
        }
        owner = self.processors[0].owner
        # shares differ by at most one: the first (n mod members) workers take one more
        rank = sorted(members).index(self.owner)
        base, extra = divmod(len(self.processors), len(members))
        share = base + (rank < extra)
        mine = [p for p in self.processors if p.epoch is not None]
        for proc in mine[share:]:
            proc.release()
        room = share - len(mine)
        # start looking at a place that depends on the owner, so workers do not all race
        # for the same free partitions
        start = (rank * base + min(rank, extra)) % len(self.processors)
        order = self.processors[start:] + self.processors[:start]
        for proc in order:
            if proc.epoch is not None:
                continue
            free = proc.partition not in held or held[proc.partition] == owner
            proc.wanted = free and room > 0
            if proc.wanted:
                room -= 1
