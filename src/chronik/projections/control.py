"""What a processor does on request: pause, resume, reset, rebuild, retry dead letters; takeover.

Requests are rows of ``chronik_projection_requests`` (written by ``ProjectionAdmin``, from any
process); the processor applies each one and deletes it in the same unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

from chronik.errors import (
    ConfigurationError,
    ServiceUnavailable,
    StoreClosed,
    StoreUnavailable,
    TransportUnavailable,
    ValidationError,
)
from chronik.messages import Position, RecordedEvent
from chronik.projections import plan
from chronik.projections.lanes import (
    Lane,
    delete_letter,
    drop_tables,
    ensure_tables,
    forget_dead_letters,
    load_lane,
    specs,
)
from chronik.projections.readmodel import ReadModel
from chronik.projections.system import DEAD_LETTERS, REQUESTS, STATUS, load_plan
from chronik.store.base import TableWrite

if TYPE_CHECKING:
    from chronik.projections.processor import ProjectionProcessor

__all__ = ["maybe_take_over", "poll_requests", "retry_handler", "setup"]

START = Position(0)


async def poll_requests(proc: ProjectionProcessor) -> None:
    """Follow a partitioned projection's plan; apply the pending requests, oldest first."""
    if proc.projection.partitions > 1:
        await plan.poll(proc)
    rows = await proc.store.read_table(REQUESTS.name, {"projection": proc.key}, order_by=("id",))
    for r in rows:
        done = TableWrite.delete(REQUESTS.name, {"id": r["id"]})
        action, arg = r["action"], r["arg"] or ""
        if action == "pause":
            proc.state = "paused"
            await proc._commit([done])
        elif action == "resume":
            proc.state = "running"
            proc.last_error = None
            await proc._commit([done])
        elif proc.projection.partitions > 1 and (
            action == "rebuild" or (action == "reset" and not arg)
        ):  # a new generation for every partition: partition 0 leads, the others follow
            if proc.state == "stopped":
                proc.state = "running"
            await plan.poll(proc, action if proc.partition == 0 else None, [done])
        elif action == "rebuild" or (action == "reset" and not arg and proc.active.frozen):
            await _rebuild(proc, [done])
        elif action == "reset":
            await _reset(proc, arg, [done])
        elif action == "retry":
            await _retry(proc, {arg} if arg else None, [done])
        else:  # refresh: dead letters were dropped; streams whose failed event went flow on
            await _retry(proc, await _headless(proc), [done])


async def _rebuild(proc: ProjectionProcessor, writes: list[TableWrite]) -> None:
    """Start a new generation that builds while the current one serves (blue/green)."""
    old = proc.building
    generation = max(proc.active.generation, old.generation if old else 0) + 1
    if old is not None:
        writes += drop_tables(proc, old.generation) + await forget_dead_letters(
            proc, old.generation
        )
    lane = proc.building = Lane(generation, proc.projection.version)
    writes += ensure_tables(proc, generation)
    if proc.state == "stopped":
        proc.state = "running"
    await proc._commit(writes, lane, START)
    lane.position = lane.applied = START


async def _reset(proc: ProjectionProcessor, arg: str, writes: list[TableWrite]) -> None:
    """Reset the serving generation: to the start (tables cleared) or to a position."""
    lane = proc.active
    if arg:
        try:
            position = Position.parse(arg)
        except ValidationError as exc:
            proc.last_error = f"reset ignored: {exc}"
            await proc._commit(writes)
            return
    else:
        position = START
        writes += [TableWrite("clear", s.name) for s in specs(proc, lane.generation)]
        writes += await forget_dead_letters(proc, lane.generation)
        lane.parked = set()
    if proc.state == "stopped":
        proc.state = "running"
    await proc._commit(writes, lane, position)
    lane.position = lane.applied = position
    lane.caught_up = False


async def _headless(proc: ProjectionProcessor) -> set[str]:
    """Streams whose first parked event is one that only waited (its failed one was dropped)."""
    rows = await proc.store.read_table(
        DEAD_LETTERS.name,
        {"projection": proc.key, "generation": proc.active.generation},
        order_by=("position", "position_index"),
    )
    first: dict[str, bool] = {}
    for r in rows:
        first.setdefault(r["stream"], bool(r["blocked"]))
    return {stream for stream, blocked in first.items() if blocked}


async def _retry(
    proc: ProjectionProcessor, streams: set[str] | None, writes: list[TableWrite]
) -> None:
    """Apply parked events again (of ``streams``, or all), per stream in order; a stream with
    none left flows on. An event id in ``streams`` stands for its stream (order holds)."""
    lane, name = proc.active, proc.key
    rows = await proc.store.read_table(
        DEAD_LETTERS.name,
        {"projection": name, "generation": lane.generation},
        order_by=("position", "position_index"),
    )
    if streams is not None:
        streams = {r["stream"] for r in rows if r["stream"] in streams or r["event_id"] in streams}
    failed: set[str] = set()
    rm = ReadModel(proc.store, proc.projection.tables, lane.generation)
    for r in rows:
        if (streams is not None and r["stream"] not in streams) or r["stream"] in failed:
            continue
        event = await proc.store.get_event(r["event_id"])
        if event is not None and event.type in proc.projection.handlers:
            rm.begin(event)
            try:
                await proc.projection.handle(event, rm)
            except Exception as exc:
                rm.discard()
                failed.add(r["stream"])
                error = f"{type(exc).__name__}: {exc}"
                values = {**r, "error": error, "attempts": (r["attempts"] or 0) + 1}
                writes.append(
                    TableWrite.upsert(DEAD_LETTERS.name, values, DEAD_LETTERS.primary_key)
                )
                continue
            rm.keep()
        writes.append(delete_letter(name, lane.generation, r["event_id"]))
    await proc._commit(rm.writes + writes)
    await proc._load_parked(lane)


async def maybe_take_over(proc: ProjectionProcessor) -> None:
    """Switch to the building generation once it has caught up with the serving one (a
    partitioned projection switches when its plan does: see chronik.projections.plan)."""
    new, old = proc.building, proc.active
    if new is None or proc.projection.partitions > 1 or not new.caught_up or new.position is None:
        return
    if not old.frozen and old.position is not None and new.position < old.position:
        return
    writes = drop_tables(proc, old.generation) + await forget_dead_letters(proc, old.generation)
    proc.active, proc.building = new, None
    await proc._commit(writes, new, new.position)
    proc._resolve_waiters()


async def setup(proc: ProjectionProcessor) -> None:
    """Load the projection's generations, checkpoints and parked streams from the database."""
    store, p = proc.store, proc.projection
    found = await store.read_table(STATUS.name, {"name": proc.key}, limit=1)
    row: dict[str, Any] = found[0] if found else {}
    # a pause survives restarts; a projection stopped by its error policy retries on start
    proc.state = "paused" if row.get("state") == "paused" else "running"
    if p.partitions > 1:
        await plan.setup(proc, row)
        return
    if not row and await load_plan(store, p.name) is not None:  # it ran partitioned
        async with store.transaction() as tx:
            tx.write_tables([proc._lease_write("release")])
        proc.epoch = None
        raise ConfigurationError(
            f"projection {p.name} runs in partitions (see chronik_projection_plans): run it "
            "with PartitionWorkers, or give the unpartitioned projection a new name"
        )
    generation = row.get("generation") or 1
    building, building_version = row.get("building"), row.get("building_version")
    proc.active = await load_lane(proc, generation, row.get("version") or p.version)
    proc.building = None
    writes: list[TableWrite] = []
    if building and building_version == p.version:
        proc.building = await load_lane(proc, building, p.version)
    elif building:
        writes += drop_tables(proc, building)
    for lane in proc._lanes(include_frozen=False):
        writes += ensure_tables(proc, lane.generation)
    if proc.active.frozen and proc.building is None:  # a new version: build it (blue/green)
        await _rebuild(proc, writes)
    else:
        await proc._commit(writes)


#: What a handler raises when the infrastructure is down, not the event bad: the whole page is
#: left uncommitted and retried by the processor's loop (with backoff, for as long as it takes)
#: instead of using up the policy's retries and parking a good event.
TRANSIENT_ERRORS: Final = (StoreUnavailable, StoreClosed, ServiceUnavailable, TransportUnavailable)


async def retry_handler(
    proc: ProjectionProcessor, event: RecordedEvent, rm: ReadModel, first: Exception
) -> str | None:
    """Retry a failed handler as the policy says; the error text if it kept failing. An error
    of TRANSIENT_ERRORS is raised instead (the page is retried whole, later)."""
    if isinstance(first, TRANSIENT_ERRORS):
        raise first
    policy = proc.projection.policy
    exc: Exception = first
    for attempt in range(1, policy.retries + 2):
        error = f"{type(exc).__name__}: {exc}"
        if attempt > policy.retries or proc._stopping:
            return error
        proc.state = "failing"
        proc.last_error = f"{event.type} {event.event_id} ({event.stream}): {error}"
        if attempt == 1:
            with contextlib.suppress(Exception):
                await proc._commit([])
        await asyncio.sleep(policy.delay(attempt))
        rm.begin(event)
        try:
            await proc.projection.handle(event, rm)
        except Exception as again:
            rm.discard()
            if isinstance(again, TRANSIENT_ERRORS):
                raise
            exc = again
        else:
            rm.keep()
            return None
    raise AssertionError("unreachable")
