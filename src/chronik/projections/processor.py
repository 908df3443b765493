"""The projection processor: catch-up then live, in batches, checkpoint and rows in one commit.

One task per projection reads pages of the event types it handles after its checkpoint, runs the
handlers in order (so per-stream order always holds), and commits the staged read-model writes,
the dead letters, the new checkpoint and its status row as one unit of work: a crash at any
point leaves the read model exactly at the checkpoint (effectively once). It reads the next
page only after the commit (backpressure). A blue/green rebuild is a second lane with its own
generation of tables and checkpoint, run by the same task; it takes over once caught up.

The only module that commits for a projection or changes a processor's state: ``control``
(requests, start-up, takeover) and ``plan`` (partitions) decide from a ``View``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

from chronik.errors import (
    CheckpointFenced,
    ConfigurationError,
    LeaseHeld,
    ProjectionStopped,
    ReadModelError,
    StoreClosed,
)
from chronik.messages import Position, RecordedEvent
from chronik.projections import batch, control, dead_letters, plan
from chronik.projections.bookkeeping import Plan, RateMeter, status_row
from chronik.projections.lanes import START, Lane, View, Waiters, partition_key, wants_commit
from chronik.projections.loop import Loop
from chronik.projections.projection import Projection
from chronik.projections.readmodel import ReadModel
from chronik.store import leases
from chronik.store.base import EventStore, TableWrite

__all__ = ["ProjectionProcessor"]


class ProjectionProcessor(Loop):
    """Runs one projection against a store; ``async with`` it or call start() and stop().

    ``state`` is one of new, standby, running, paused, rebuilding, failing, stopped.
    ``position`` is how far the serving generation has applied (every event up to it is
    applied or parked).

    One process at a time runs a projection: the processor holds a lease in the database
    (renewed with every commit, by the database clock; ``lease_ttl`` seconds) and writes its
    checkpoints with the lease's epoch. Another processor of the same projection waits in
    state ``standby`` and takes over when the lease is released or expires; a unit of work from
    an owner that lost its lease fails whole (LeaseHeld), so no batch is ever applied twice.
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        heartbeat: float = 1.0,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        partition: int = 0,
        wanted: bool = True,
    ) -> None:
        #: the name of this processor's status row, requests and dead letters
        self.key = partition_key(projection, partition, heartbeat, lease_ttl)
        super().__init__(store, f"projection {self.key}", f"projection-{projection.name}")
        self.partition, self.projection = partition, projection
        self.heartbeat, self.lease_ttl = heartbeat, lease_ttl
        self.wanted, self._release = wanted, False  # whether to claim the lease (worker decides)
        self.epoch: int | None = None  # the lease epoch while this processor holds the lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.state, self.processed = "new", 0
        self.last_error: str | None = None
        self.active = Lane(1, projection.version)
        self.building: Lane | None = None
        self.plan: Plan | None = None  # the plan of a partitioned projection the lanes follow
        self.outdated = False  # the plan serves a newer version than this process runs
        self._types, self._waiters, self.rate = projection.types, Waiters(), RateMeter()
        self.head: Position | None = None
        self.last_event_us, self._last_status, self._next_claim = 0, 0.0, 0.0

    async def stop(self, grace: float | None = None) -> None:
        """Finish the current batch, record state ``stopped`` and end the loop; a batch still
        running after ``grace`` s (a handler that never returns) is cancelled, uncommitted."""
        await self._halt(grace)
        self._waiters.fail(ProjectionStopped(f"projection {self.projection.name} was stopped"))
        if not self.store.closed and self.epoch is not None:
            self.state = "stopped"
            with contextlib.suppress(Exception):
                await self._commit([], release=True)
            self.epoch = None

    async def __aenter__(self) -> ProjectionProcessor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<ProjectionProcessor {self.projection.name} {self.state} at {self.position}>"

    @property
    def position(self) -> Position | None:
        """How far the serving generation has applied (committed)."""
        return self.active.applied

    async def wait_for(self, position: Position) -> None:
        """Return once every event up to ``position`` is applied (read-your-writes); raises
        ProjectionStopped if the projection stops first (bound it with ``asyncio.timeout``)."""
        if self.state == "stopped":
            raise ProjectionStopped(f"projection {self.projection.name} is stopped")
        if not Waiters.reached(self.active, position):
            self._wake(quiet=True)  # an idle wait may have let this store's commits pass
            await self._waiters.wait(position)

    def release(self) -> None:
        """Give the lease up after the current batch and stand by (a PartitionWorker calls it)."""
        self.wanted, self._release = False, True
        self._wake()

    async def _acquire(self) -> bool:
        """Claim the projection's lease; on success load everything from the database."""
        if not self.wanted:
            self.state = "standby"
            return False
        self.epoch = await leases.acquire(
            self.store, self.projection.name, self.owner, self.lease_ttl, self.partition
        )
        if self.epoch is None:
            self.state = "standby"
            return False
        start = await control.setup(self.store, self.projection, self.partition, self.key)
        self.state = start.state
        if start.refuse is not None:
            async with self.store.transaction() as tx:
                tx.release_lease(self.projection.name, self.owner, self.partition)
            self.epoch = None
            raise ConfigurationError(start.refuse)
        if start.active is None:  # partitioned: as the plan says
            self.plan = None
            await self._follow(row=start.row)
        else:
            self.active, self.building = start.active, start.building
            await self._apply(start.step)
        return True

    def _wants_commit(self) -> bool:  # an idle wait's question at this store object's commits
        return wants_commit(self._waiters, self._lanes(False), self.store, self._types)

    def _lanes(self, include_frozen: bool = True) -> list[Lane]:
        lanes = [self.active] if include_frozen or not self.active.frozen else []
        return lanes + ([self.building] if self.building is not None else [])

    def _view(self) -> View:
        """This processor as values, for control and plan to decide from."""
        p, k, a = self.projection, self.partition, self.active.view()
        b = None if self.building is None else self.building.view()
        return View(p, k, self.key, self.state, self.last_error, self.plan, self.outdated, a, b)

    async def _poll(self) -> None:
        """Follow a partitioned projection's plan; carry out the pending requests, oldest first."""
        if self.projection.partitions > 1:
            await self._follow()
        for r in await control.requests(self.store, self.key):
            if (step := await control.decide(self.store, self._view(), r)) is not None:
                await self._apply(step)  # None: left queued for another processor

    async def _apply(self, step: control.Step) -> None:
        """Carry out a decision of chronik.projections.control and commit it."""
        if step.state is not None:
            self.state = step.state
        if step.wake and self.state == "stopped":
            self.state = "running"
        if step.clear_error or step.error is not None:
            self.last_error = step.error
        if step.follow:
            await self._follow(step.request, step.writes)
            return
        lane, at = None, None
        if step.build is not None:
            lane = self.building = Lane(step.build, self.projection.version)
            at = START
        elif step.reset is not None:
            lane, at = self.active, step.reset
            if step.unpark:
                lane.parked = set()
        elif step.take_over and self.building is not None:
            lane = self.active = self.building
            self.building, at = None, lane.position
        await self._commit(step.writes, lane, at)
        if step.take_over or lane is None:
            self._waiters.resolve(self.active)
        elif lane is not None:
            lane.position = lane.applied = at
            lane.caught_up = False
        if step.reload_parked:
            lane = self.active
            lane.parked = await dead_letters.parked_streams(self.store, self.key, lane.generation)

    async def _follow(
        self,
        request: str | None = None,
        writes: list[TableWrite] | None = None,
        row: dict[str, Any] | None = None,
    ) -> None:
        """Follow the plan of a partitioned projection (see chronik.projections.plan)."""
        d = await plan.poll(self.store, self._view(), request, writes, row)
        self.last_error = d.last_error
        f = d.follow
        if f is not None:
            lanes = {lane.generation: lane for lane in self._lanes()} | f.loaded
            self.plan, self.outdated = f.plan, f.outdated
            self.active = lanes[f.active]
            self.active.frozen = f.frozen
            self.building = None if f.building is None else lanes[f.building]
        self.active.stop_at = d.stop_at  # a repartition holds the serving lane there
        if d.commit:
            await self._commit(d.writes, checkpoints=d.stopped)
        if f is not None and f.changed:
            self._waiters.resolve(self.active)

    async def _run(self) -> None:
        errors = 0
        while not self._stopping and not self.store.closed:
            signal = self.store.change_signal()
            try:
                if self._release and self.epoch is not None:
                    self._release = False
                    await self._commit([], release=True)
                    self.epoch, self.state = None, "standby"
                # standby: try to take over once per heartbeat (not on every change)
                if self.epoch is None:
                    now = time.monotonic()
                    if now < self._next_claim or not await self._acquire():
                        if now >= self._next_claim:
                            self._next_claim = now + self.heartbeat
                        self._next_poll = self._next_claim
                        await self._idle(signal)
                        continue
                now = time.monotonic()
                if now >= self._next_poll:
                    self._next_poll = now + self.heartbeat
                    await self._poll()
                progressed = False
                if self.state not in ("paused", "stopped"):
                    self._busy_since = time.monotonic()
                    try:
                        for lane in self._lanes(include_frozen=False):
                            progressed = await self._step(lane) or progressed
                        if self.building is not None and self.projection.partitions == 1:
                            step = await control.take_over(self.store, self._view())
                            if step is not None:
                                await self._apply(step)
                    finally:
                        self._busy_since = None
                recovered = self.state == "failing"
                if recovered:  # every read and commit of this round went through
                    self.state = "running"
                if not progressed:
                    if recovered or time.monotonic() - self._last_status >= self.heartbeat:
                        await self._commit([])
                    await self._idle(signal, self._wants_commit)
                errors = 0
            except (StoreClosed, asyncio.CancelledError):
                return
            except (LeaseHeld, CheckpointFenced) as exc:
                self.epoch = None  # another process took over: stand by
                self.state = "standby"
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # never let a store or handler error end the loop
                if getattr(exc, "outcome_unknown", False):  # the commit may have landed:
                    self.epoch = None  # reclaiming the lease reloads checkpoints and tables
                errors += 1
                if self.state not in ("paused", "stopped"):
                    self.state = "failing"
                self.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(errors, 7)))

    def _stop_with(self, error: str) -> None:
        self.state = "stopped"
        self.last_error = error
        self._waiters.fail(ProjectionStopped(f"projection {self.projection.name}: {error}"))

    async def _step(self, lane: Lane) -> bool:
        """Process one page of ``lane``; False when there was nothing to do."""
        store, p = self.store, self.projection
        limit = 1 if lane.isolate_until is not None else p.batch_size
        page: list[RecordedEvent] = []
        bound = self.head = lane.quiet_until(store, self._types) if self.quiet_wake else None
        if bound is None:
            read = await p.read_page(store, lane.position, limit, self._types)
            self.head = read.scanned or await store.head()  # a short page's read saw the head
            page, bound = lane.cut(read)
        if not page:
            if lane.scanned(bound):  # none of ours up to there
                self._waiters.resolve(self.active)
            return False
        lane.caught_up = False
        rm = ReadModel(store, p.tables, lane.generation)
        where = (self.key, self.partition)
        done = await batch.handle(
            p, page, rm, lane.position, lane.parked, where, self._failing, lambda: self._stopping
        )
        position, parked = done.position, done.parked
        stop_error = done.error if done.stopped else None
        if done.error is not None:
            self.last_error = done.error
        if stop_error is None and len(page) < limit and bound is not None:
            position = max(position, bound) if position is not None else bound
        state = "stopped" if stop_error is not None else self.state
        if state == "failing":
            state = "running"
        try:
            await self._advance(lane, position, state, done.writes, page)
        except ReadModelError as exc:
            if len(page) > 1:  # find the event the database refuses: one event per commit
                lane.isolate_until = page[-1].position
                return True
            done = batch.refused(p, page[0], exc, where, lane.generation, lane.parked)
            self.last_error = done.error
            if done.stopped and done.error is not None:
                self._stop_with(done.error)
                return False
            parked = done.parked
            await self._advance(lane, done.position, state, done.writes, page)
        lane.parked = parked
        until = lane.isolate_until
        if until is not None and lane.position is not None and lane.position >= until:
            lane.isolate_until = None
        if lane is self.active:
            self._waiters.resolve(lane)
        if stop_error is not None:
            self._stop_with(stop_error)
        return stop_error is None

    async def _failing(self, error: str, first: bool) -> None:
        """A handler is retried: state failing, ``error`` (committed before the first retry)."""
        self.state, self.last_error = "failing", error
        if first:
            with contextlib.suppress(Exception):
                await self._commit([])

    async def _advance(
        self,
        lane: Lane,
        position: Position | None,
        state: str,
        writes: list[TableWrite],
        page: list[RecordedEvent],
    ) -> None:
        """Commit a processed page; the lane and counters move only if the commit succeeds."""
        before = (lane.position, self.state, self.processed, self.last_event_us)
        lane.position, self.state = position, state
        self.processed += len(page)
        if lane is self.active:
            self.last_event_us = page[-1].recorded_at_us
        try:
            await self._commit(writes, lane, position)
        except BaseException:
            lane.position, self.state, self.processed, self.last_event_us = before
            raise
        lane.applied = position

    async def _commit(
        self,
        writes: list[TableWrite],
        lane: Lane | None = None,
        position: Position | None = None,
        checkpoints: plan.Checkpoints = (),
        release: bool = False,
    ) -> None:
        """Commit table writes, the lane's, dirty and other ``checkpoints`` of this partition and
        the status row, with the lease renewed (or given up with ``release``)."""
        name, epoch, k = self.projection.name, self.epoch, self.partition
        if epoch is None:
            raise LeaseHeld(name, k, self.owner)
        counters = (self.processed, self.rate(self.processed), self.last_event_us)
        async with self.store.transaction() as tx:
            if release:
                tx.release_lease(name, self.owner, k)
            else:
                tx.acquire_lease(name, self.owner, self.lease_ttl, k)
            tx.write_tables(writes, checked=True)
            if lane is not None and position is not None:
                tx.save_checkpoint(lane.checkpoint(name), position, k, epoch)
            for other in self._lanes(include_frozen=False):
                if other.dirty and other is not lane and other.position is not None:
                    tx.save_checkpoint(other.checkpoint(name), other.position, k, epoch)
            for checkpoint, at, *fence in checkpoints:  # fence: a repartition's other partitions
                tx.save_checkpoint(checkpoint, at, *(fence or (k, epoch)))
            tx.write_tables([status_row(self._view(), self.owner, self.head, counters)])
        for other in self._lanes(include_frozen=False):
            other.dirty = False
        self._last_status = time.monotonic()
