"""What a processor does on request, at start-up and at takeover, decided from a ``View``.

Requests are rows of ``chronik_projection_requests`` (written by ``ProjectionAdmin``, from any
process): pause, resume, reset, rebuild, retry dead letters, refresh. Each is turned into a
``Step``, the processor's next move as values (a new state, a generation to build, a position
to reset to, the table writes, the request's own delete among them); the processor applies it
and commits it as one unit of work. Functions here read the store, never write it. A
repartition request starts chronik.projections.repartition (partition 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chronik.errors import ValidationError
from chronik.messages import Position
from chronik.projections import dead_letters, repartition
from chronik.projections.bookkeeping import REQUESTS, STATUS, load_plan
from chronik.projections.lanes import (
    START,
    Lane,
    View,
    drop_tables,
    ensure_tables,
    load_lane,
    specs,
)
from chronik.projections.projection import Projection
from chronik.store.base import EventStore, TableWrite

__all__ = ["Start", "Step", "decide", "requests", "setup", "take_over"]


@dataclass(frozen=True, slots=True)
class Step:
    """The processor's next move; it applies the fields in this order, then commits."""

    writes: list[TableWrite] = field(default_factory=list)
    state: str | None = None  # the state from now on
    wake: bool = False  # a stopped processor runs again
    error: str | None = None  # the new last_error (with clear_error: even None)
    clear_error: bool = False
    follow: bool = False  # partitioned: follow the plan, committing the writes with it
    request: str | None = None  # ... after the leader changed it as this request asks
    build: int | None = None  # start building this new generation from the start
    reset: Position | None = None  # move the serving generation to this position
    unpark: bool = False  # ... whose parked streams are gone
    take_over: bool = False  # the building generation serves from now on
    reload_parked: bool = False  # read the serving generation's parked streams again


@dataclass(frozen=True, slots=True)
class Start:
    """What a processor that just claimed its lease starts from."""

    state: str
    row: dict[str, Any]  # its status row as the last owner left it ({} if none)
    active: Lane | None = None  # None: a partitioned projection, whose plan says
    building: Lane | None = None
    step: Step = field(default_factory=Step)
    refuse: str | None = None  # why it cannot run (it ran partitioned before)


async def requests(store: EventStore, key: str) -> list[dict[str, Any]]:
    """The pending requests of a processor, oldest first."""
    return await store.read_table(REQUESTS.name, {"projection": key}, order_by=("id",))


async def decide(store: EventStore, view: View, r: dict[str, Any]) -> Step | None:
    """The step that carries out request ``r`` (and deletes it); None leaves it queued for
    another processor (a repartition: for the leader of the split that serves)."""
    done = [TableWrite.delete(REQUESTS.name, {"id": r["id"]})]
    action, arg = r["action"], r["arg"] or ""
    p = view.projection
    if action == "pause":
        return Step(done, state="paused")
    if action == "resume":
        return Step(done, state="running", clear_error=True)
    if action == "repartition":  # the leader starts it (chronik.projections.repartition)
        if view.partition != 0 or p.partitions < 2:
            return Step(done)
        answer = await repartition.request(store, view, arg)
        if answer is None:
            return None
        writes, refused = answer
        return Step(writes + done, error=refused, clear_error=refused is None)
    if p.partitions > 1 and (action == "rebuild" or (action == "reset" and not arg)):
        # a new generation for every partition: partition 0 leads, the others follow
        return Step(done, wake=True, follow=True, request=action if view.partition == 0 else None)
    if action == "rebuild" or (action == "reset" and not arg and view.active.frozen):
        return await rebuild(store, view, done)
    if action == "reset":
        return await _reset(store, view, arg, done)
    key, generation = view.key, view.active.generation
    if action == "retry":
        streams = {arg} if arg else None
    else:  # refresh: dead letters were dropped; streams whose failed event went flow on
        streams = await dead_letters.headless(store, key, generation)
    writes = await dead_letters.retry(store, p, key, generation, streams)
    return Step(writes + done, reload_parked=True)


async def rebuild(store: EventStore, view: View, writes: list[TableWrite]) -> Step:
    """Start a new generation that builds while the current one serves (blue/green)."""
    p, old = view.projection, view.building
    generation = max(view.active.generation, old.generation if old else 0) + 1
    if old is not None:
        writes += drop_tables(p, old.generation)
        writes += await dead_letters.forget(store, view.key, old.generation)
    return Step(writes + ensure_tables(p, generation), wake=True, build=generation)


async def _reset(store: EventStore, view: View, arg: str, writes: list[TableWrite]) -> Step:
    """Reset the serving generation: to the start (tables cleared) or to a position."""
    generation = view.active.generation
    if not arg:
        writes += [TableWrite("clear", s.name) for s in specs(view.projection, generation)]
        writes += await dead_letters.forget(store, view.key, generation)
        return Step(writes, wake=True, reset=START, unpark=True)
    try:
        position = Position.parse(arg)
    except ValidationError as exc:
        return Step(writes, error=f"reset ignored: {exc}")
    return Step(writes, wake=True, reset=position)


async def take_over(store: EventStore, view: View) -> Step | None:
    """Switch to the building generation once it has caught up with the serving one (a
    partitioned projection switches when its plan does: see chronik.projections.plan)."""
    new, old = view.building, view.active
    if new is None or view.projection.partitions > 1 or not new.caught_up or new.position is None:
        return None
    if not old.frozen and old.position is not None and new.position < old.position:
        return None
    writes = drop_tables(view.projection, old.generation)
    writes += await dead_letters.forget(store, view.key, old.generation)
    return Step(writes, take_over=True)


async def setup(store: EventStore, p: Projection, partition: int, key: str) -> Start:
    """What a processor starts from: its generations, checkpoints and parked streams."""
    found = await store.read_table(STATUS.name, {"name": key}, limit=1)
    row: dict[str, Any] = found[0] if found else {}
    # a pause survives restarts; a projection stopped by its error policy retries on start
    state = "paused" if row.get("state") == "paused" else "running"
    if p.partitions > 1:
        return Start(state, row)
    if not row and await load_plan(store, p.name) is not None:  # it ran partitioned
        return Start(
            state,
            row,
            refuse=f"projection {p.name} runs in partitions (see chronik_projection_plans): run "
            "it with PartitionWorkers, or give the unpartitioned projection a new name",
        )
    generation = row.get("generation") or 1
    building, building_version = row.get("building"), row.get("building_version")
    active = await load_lane(store, p, partition, key, generation, row.get("version") or p.version)
    new: Lane | None = None
    writes: list[TableWrite] = []
    if building and building_version == p.version:
        new = await load_lane(store, p, partition, key, building, p.version)
    elif building:
        writes += drop_tables(p, building)
    for lane in (active, new):
        if lane is not None and not lane.frozen:
            writes += ensure_tables(p, lane.generation)
    if active.frozen and new is None:  # a new version: build it (blue/green)
        view = View(p, partition, key, state, None, None, False, active.view(), None)
        return Start(state, row, active, None, await rebuild(store, view, writes))
    return Start(state, row, active, new, Step(writes))
