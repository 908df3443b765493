"""The projection processor: catch-up then live, in batches, checkpoint and rows in one commit.

One task per projection reads pages of the event types it handles after its checkpoint, runs the
handlers in order (so per-stream order always holds), and commits the staged read-model writes,
the dead letters, the new checkpoint and its status row as one unit of work: a crash at any
point leaves the read model exactly at the checkpoint (effectively once). It reads the next
page only after the commit (backpressure). A blue/green rebuild is a second lane with its own
generation of tables and checkpoint, run by the same task; it takes over once caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

from chronik.errors import (
    CheckpointFenced,
    ConfigurationError,
    LeaseHeld,
    ProjectionStopped,
    ReadModelError,
    StoreClosed,
    ValidationError,
)
from chronik.messages import Position, RecordedEvent
from chronik.projections import control, leases, rows
from chronik.projections.lanes import Lane
from chronik.projections.projection import Projection
from chronik.projections.readmodel import ReadModel
from chronik.projections.system import DEAD_LETTERS, Plan
from chronik.store.base import EventStore, TableWrite

__all__ = ["ProjectionProcessor"]


class ProjectionProcessor:
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
        if not projection.handlers:
            raise ConfigurationError(f"projection {projection.name!r} has no handlers")
        if type(partition) is not int or not 0 <= partition < projection.partitions:
            raise ValidationError(f"{projection.name} has no partition {partition!r}")
        self.partition = partition
        #: the name of this processor's status row, requests and dead letters
        self.key = (
            projection.name if projection.partitions == 1 else f"{projection.name}/{partition}"
        )
        self.wanted = wanted  # whether to claim the lease (a PartitionWorker decides)
        self._release = False
        self.store = store
        self.projection = projection
        self.heartbeat = heartbeat
        if lease_ttl <= 2 * heartbeat:
            raise ValidationError("lease_ttl must be more than twice the heartbeat")
        self.lease_ttl = lease_ttl
        self.epoch: int | None = None  # the lease epoch while this processor holds the lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.state = "new"
        self.last_error: str | None = None
        self.processed = 0
        self.active = Lane(1, projection.version)
        self.building: Lane | None = None
        self.plan: Plan | None = None  # the plan of a partitioned projection the lanes follow
        self.outdated = False  # the plan serves a newer version than this process runs
        self._types = projection.types
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._waiters: list[tuple[Position, asyncio.Future[None]]] = []
        self.rate = rows.RateMeter()
        self.head: Position | None = None
        self.last_event_us = 0
        self._last_status = 0.0
        self._next_poll = 0.0
        self._next_claim = 0.0
        self._busy_since: float | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Set up (tables, checkpoint, parked streams, pending requests) and start the loop."""
        if self._task is None or (self._task.done() and not self._stopping):
            await self._acquire()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"projection-{self.projection.name}"
            )

    async def stop(self, grace: float | None = None) -> None:
        """Finish the current batch, record state ``stopped`` and end the loop; a batch still
        running after ``grace`` s (a handler that never returns) is cancelled, uncommitted."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=grace)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        self._fail_waiters(ProjectionStopped(f"projection {self.projection.name} was stopped"))
        if not self.store.closed and self.epoch is not None:
            self.state = "stopped"
            with contextlib.suppress(Exception):
                await self._commit([self._lease_write("release")])
            self.epoch = None

    async def join(self) -> None:
        """Wait until the loop ends; raise what ended it unless it was stopped (or the store
        closed), ProjectionStopped if it ended without a cause."""
        task = self._task
        if task is None:
            return
        await asyncio.wait([task])  # never cancels the loop itself
        if self._stopping or self.store.closed:
            return
        if task.cancelled():
            raise ProjectionStopped(f"projection {self.key}: its loop was cancelled")
        exc = task.exception()
        raise exc if exc is not None else ProjectionStopped(f"projection {self.key}: loop ended")

    @property
    def busy_for(self) -> float:
        """Seconds the current page (or handler retry) has been running, 0 when idle."""
        return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

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
        """Return once every event up to ``position`` is applied (read-your-writes).

        Raises ProjectionStopped if the projection stops first; bound the wait with
        ``asyncio.timeout``.
        """
        if self.state == "stopped":
            raise ProjectionStopped(f"projection {self.projection.name} is stopped")
        if self._reached(position):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, fut))
        try:
            await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _reached(self, position: Position) -> bool:
        mine = self.active.applied
        return not self.active.frozen and mine is not None and mine >= position

    def _resolve_waiters(self) -> None:
        if self._waiters:
            for position, fut in self._waiters:
                if not fut.done() and self._reached(position):
                    fut.set_result(None)

    def _fail_waiters(self, exc: Exception) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)

    # --- setup --------------------------------------------------------------------------------

    def _lease_write(self, op: str = "lease") -> TableWrite:
        return leases.write(self.projection.name, self.owner, self.lease_ttl, op, self.partition)

    def release(self) -> None:
        """Give the lease up after the current batch and stand by (a PartitionWorker calls it)."""
        self.wanted = False
        self._release = True
        self._wake.set()

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
        await control.setup(self)
        return True

    def _lanes(self, include_frozen: bool = True) -> list[Lane]:
        lanes = [self.active] if include_frozen or not self.active.frozen else []
        return lanes + ([self.building] if self.building is not None else [])

    async def _load_parked(self, lane: Lane) -> None:
        rows = await self.store.read_table(
            DEAD_LETTERS.name, {"projection": self.key, "generation": lane.generation}
        )
        lane.parked = {r["stream"] for r in rows}

    # --- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        errors = 0
        while not self._stopping and not self.store.closed:
            signal = self.store.change_signal()
            try:
                if self._release and self.epoch is not None:
                    self._release = False
                    await self._commit([self._lease_write("release")])
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
                    await control.poll_requests(self)
                progressed = False
                if self.state not in ("paused", "stopped"):
                    self._busy_since = time.monotonic()
                    try:
                        for lane in self._lanes(include_frozen=False):
                            progressed = await self._step(lane) or progressed
                        await control.maybe_take_over(self)
                    finally:
                        self._busy_since = None
                recovered = self.state == "failing"
                if recovered:  # every read and commit of this round went through
                    self.state = "running"
                if not progressed:
                    if recovered or time.monotonic() - self._last_status >= self.heartbeat:
                        await self._commit([])
                    await self._idle(signal)
                errors = 0
            except (StoreClosed, asyncio.CancelledError):
                return
            except (LeaseHeld, CheckpointFenced) as exc:
                self.epoch = None  # another process took over: stand by
                self.state = "standby"
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # never let a store or handler error end the loop
                errors += 1
                if self.state not in ("paused", "stopped"):
                    self.state = "failing"
                self.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(errors, 7)))

    async def _idle(self, signal: asyncio.Event) -> None:
        timeout = max(0.0, self._next_poll - time.monotonic())
        if self._stopping:
            return
        waits = [asyncio.ensure_future(signal.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            with self.store.watching():
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            self._wake.clear()

    def _stop_with(self, error: str) -> None:
        self.state = "stopped"
        self.last_error = error
        self._fail_waiters(ProjectionStopped(f"projection {self.projection.name}: {error}"))

    async def _step(self, lane: Lane) -> bool:
        """Process one page of ``lane``; False when there was nothing to do."""
        store, p = self.store, self.projection
        self.head = await store.head()
        limit = 1 if lane.isolate_until is not None else p.batch_size
        read = await store.read_page(lane.position, limit, p.domains, self._types)
        page, bound = read
        if not page:
            lane.caught_up = True
            if bound is not None and (lane.position is None or bound > lane.position):
                lane.position = lane.applied = bound  # scanned: none of ours up to there
                lane.dirty = True
                self._resolve_waiters()
            return False
        lane.caught_up = False
        rm = ReadModel(store, p.tables, lane.generation)
        dead: list[TableWrite] = []
        position: Position | None = page[-1].position
        stop_error: str | None = None
        parked = set(lane.parked)
        handlers = p.handlers
        writes = rm.writes
        split = p.partitions > 1
        for i, e in enumerate(page):
            if split and p.partition_of(e.stream) != self.partition:
                continue  # another partition's event
            if parked and str(e.stream) in parked:
                dead.append(rows.dead_letter(self.key, lane.generation, e, None, 0, blocked=True))
                continue
            fn, is_async = handlers[e.type]
            rm.event = e
            rm._mark = len(writes)
            try:
                if is_async:
                    await fn(e, rm)  # type: ignore[misc]
                else:
                    fn(e, rm)
            except Exception as exc:
                rm.discard()
                error = await control.retry_handler(self, e, rm, exc)
                if error is None:
                    continue
                then = p.policy.then
                self.last_error = f"{e.type} {e.event_id} ({e.stream}): {error}"
                if then == "stop":
                    stop_error = self.last_error
                    position = page[i - 1].position if i else lane.position
                    break
                if then == "park":
                    parked.add(str(e.stream))
                    dead.append(
                        rows.dead_letter(self.key, lane.generation, e, error, p.policy.retries + 1)
                    )
        if stop_error is None and len(page) < limit and bound is not None:
            position = max(position, bound) if position is not None else bound
        state = "stopped" if stop_error is not None else self.state
        if state == "failing":
            state = "running"
        try:
            await self._advance(lane, position, state, rm.writes + dead, page)
        except ReadModelError as exc:
            if len(page) > 1:  # find the event the database refuses: one event per commit
                lane.isolate_until = page[-1].position
                return True
            error = f"{type(exc).__name__}: {exc}"
            self.last_error = f"{page[0].type} {page[0].event_id} ({page[0].stream}): {error}"
            if p.policy.then == "stop":
                self._stop_with(self.last_error)
                return False
            dead = []
            parked = set(lane.parked)
            if p.policy.then == "park":
                parked.add(str(page[0].stream))
                dead = [rows.dead_letter(self.key, lane.generation, page[0], error, 1)]
            await self._advance(lane, page[0].position, state, dead, page)
        lane.parked = parked
        until = lane.isolate_until
        if until is not None and lane.position is not None and lane.position >= until:
            lane.isolate_until = None
        if lane is self.active:
            self._resolve_waiters()
        if stop_error is not None:
            self._stop_with(stop_error)
        return stop_error is None

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

    # --- commits and status -------------------------------------------------------------------

    async def _commit(
        self,
        writes: list[TableWrite],
        lane: Lane | None = None,
        position: Position | None = None,
        checkpoints: tuple[tuple[str, Position], ...] = (),
    ) -> None:
        """Commit table writes, the lane's checkpoint, dirty checkpoints, other ``checkpoints``
        (name, position) of this partition and the status row."""
        name, epoch, k = self.projection.name, self.epoch, self.partition
        if epoch is None:
            raise LeaseHeld(name, k, self.owner)
        async with self.store.transaction() as tx:
            if not writes or writes[-1].op != "release":
                tx.write_tables([self._lease_write()], checked=True)
            tx.write_tables(writes, checked=True)
            if lane is not None and position is not None:
                tx.save_checkpoint(lane.checkpoint(name), position, k, epoch)
            for other in self._lanes(include_frozen=False):
                if other.dirty and other is not lane and other.position is not None:
                    tx.save_checkpoint(other.checkpoint(name), other.position, k, epoch)
            for checkpoint, at in checkpoints:
                tx.save_checkpoint(checkpoint, at, k, epoch)
            tx.write_tables([rows.status(self)])
        for other in self._lanes(include_frozen=False):
            other.dirty = False
        self._last_status = time.monotonic()
