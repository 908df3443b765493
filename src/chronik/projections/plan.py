"""Generations of a partitioned projection: one plan for every partition, led by partition 0.

All partitions write into the same tables (``name__g{n}``), so a rebuild, a reset to the start
or a new version moves them to a new generation together. The plan (a row of
``chronik_projection_plans``) says which generation serves and which one builds. Only the owner
of partition 0, the leader, changes it, inside its own units of work, which carry its lease
write: a leader that lost its lease cannot change the plan any more.

Every partition follows the plan at its heartbeat. It serves the serving generation and builds
the building one from its own checkpoint of that generation. The leader switches the plan once
each partition's checkpoint of the building generation has reached its checkpoint of the
serving one. When the serving generation still advances (the same version rebuilt), the switch
has two phases: the plan first says ``switching``, each partition stops the serving generation
and notes where (a checkpoint ``switch:g{n}``), and the leader switches once every partition's
build has passed that point, so a read after ``wait_for`` never finds the awaited event
missing. It drops retired generations' tables, and their dead letters, once every
partition's status row shows it follows the plan. Followers never create or drop tables: the
leader creates a generation's tables in the unit of work that publishes it.

A process whose projection version is older than the one the plan serves never changes the
plan (its lanes stay frozen, and its PartitionWorker steps aside), so a rolling upgrade never
flips back; a newer version makes the
leader build it while the old one serves. A generation is built with one partition count:
processes that split the projection another way (same version) advance nothing until a
rebuild builds a generation their way, and the leader prunes what partitions of an earlier,
larger split left behind once no one holds them. A repartition changes the count of the
serving generation in place (chronik.projections.repartition: ``poll`` carries out its steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from chronik.messages import Position
from chronik.projections import dead_letters, repartition
from chronik.projections.bookkeeping import LEASES, REQUESTS, STATUS, Plan, load_plan
from chronik.projections.lanes import (
    Lane,
    View,
    checkpoint_name,
    drop_tables,
    ensure_tables,
    load_lane,
)
from chronik.store.base import EventStore, TableWrite

__all__ = ["Checkpoints", "Decision", "Follow", "poll", "switch_checkpoint"]

WAITING = "waiting for partition 0 to publish the projection's generations"
OLDER = "this process runs version"
SPLIT = "this process splits"
_NOTES = (WAITING, OLDER, SPLIT)  # what last_error says while the plan holds a partition back


@dataclass(frozen=True, slots=True)
class Follow:
    """The lanes a partition follows the plan with: the processor installs them as they are."""

    plan: Plan | None  # the plan they follow
    active: int  # the generation that serves (a lane the processor has, or one in ``loaded``)
    frozen: bool  # whether this partition advances it
    building: int | None  # the generation this partition builds
    loaded: dict[int, Lane]  # lanes read from the database (they replace any the processor has)
    outdated: bool  # the plan serves a newer version than this process runs
    changed: bool  # whether another lane serves or builds now (waiters may be resolved)


#: Checkpoints a processor commits: (name, position) of its own partition, with its epoch, or
#: (name, position, partition, epoch) (a repartition's switch fences every partition)
Checkpoints: TypeAlias = tuple[tuple[str, Position] | tuple[str, Position, int, int], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """One heartbeat of following the plan: the processor applies it, then commits if asked."""

    writes: list[TableWrite]
    last_error: str | None
    follow: Follow | None  # None: the lanes stay as they are
    stopped: Checkpoints  # where the serving one stopped (a switch, a repartition)
    commit: bool
    stop_at: Position | None = None  # where a repartition holds the serving lane


async def poll(
    store: EventStore,
    view: View,
    request: str | None = None,
    writes: list[TableWrite] | None = None,
    row: dict[str, Any] | None = None,
) -> Decision:
    """Follow the plan (the leader first changes it: ``request`` rebuild or reset, a new
    version, a switch, retired tables), with ``writes`` to commit with whatever changed; ``row``
    is the partition's status row when it was just claimed."""
    name = view.projection.name
    writes = list(writes or ())
    plan = await load_plan(store, name)
    last_error = view.last_error
    if view.partition == 0:
        new, note = await _lead(store, view, plan, request, row, writes)
        last_error = note or last_error
        if new != plan:
            writes.append(new.write(name))
            published = {new.generation, new.building} - (
                set() if plan is None else {plan.generation, plan.building}
            )
            for generation in sorted(g for g in published if g is not None):
                if _shape_of(new, generation) == _shape(view):
                    writes += ensure_tables(view.projection, generation)
            writes += await _collect(store, view, new, plan)
            plan = new
        writes += await _prune(store, view, plan)
    follow, last_error, stopped = await _follow(store, view, plan, writes, last_error)
    changed = follow is not None and follow.changed
    held = await repartition.hold(store, _after(view, follow))
    writes += held.writes
    marks: Checkpoints = (*stopped, *held.checkpoints, *held.fenced)
    commit = bool(writes or marks) or changed or row is not None
    return Decision(writes, held.error or last_error, follow, marks, commit, held.stop_at)


def _after(view: View, follow: Follow | None) -> View:
    """The view as the processor will be once it installed ``follow``."""
    if follow is None:
        return view
    lane = follow.loaded.get(follow.active)
    active = lane.view() if lane is not None else view.lanes()[follow.active]
    return replace(view, plan=follow.plan, active=active._replace(frozen=follow.frozen))


def _shape(view: View) -> tuple[int, int]:
    """What this process builds: its projection's version and partition count."""
    return view.projection.version, view.projection.partitions


def _shape_of(plan: Plan, generation: int) -> tuple[int | None, int | None]:
    if generation == plan.generation:
        return plan.version, plan.partitions
    return plan.building_version, plan.building_partitions


async def _first(
    store: EventStore, view: View, row: dict[str, Any], writes: list[TableWrite]
) -> Plan:
    """The plan before any: what partition 0 served before plans existed, or what the
    projection served when it ran unpartitioned (its status row is taken over), or nothing."""
    p = view.projection
    if row:
        return Plan(row.get("generation") or 1, row.get("version") or p.version, p.partitions)
    found = await store.read_table(STATUS.name, {"name": p.name}, limit=1)
    if found:
        writes.append(TableWrite.delete(STATUS.name, {"name": p.name}))
        return Plan(found[0]["generation"] or 1, found[0]["version"] or p.version, 1)
    return Plan(1, p.version, p.partitions)


async def _lead(
    store: EventStore,
    view: View,
    plan: Plan | None,
    request: str | None,
    row: dict[str, Any] | None,
    writes: list[TableWrite],
) -> tuple[Plan, str | None]:
    """The plan after this heartbeat of the leader, and why a request was refused."""
    version, partitions = _shape(view)
    if plan is None:
        plan = await _first(store, view, row or {}, writes)
    if version < plan.version:  # older code than what serves: never change the plan
        note = None
        if request is not None:
            note = (
                f"{request} refused: this process runs version {version} of "
                f"{view.projection.name}, older than the version {plan.version} that serves"
            )
        return await _retire(store, view, plan), note
    if request == "reset":  # start over now: a new, empty serving generation
        old = (plan.generation, *([plan.building] if plan.building else []))
        plan = Plan(plan.newest() + 1, version, partitions, retired=plan.retired + old)
    elif request == "rebuild" or (
        version > plan.version and (plan.building_version or 0) < version
    ):  # build a new generation while the current one serves
        old = (plan.building,) if plan.building else ()
        plan = plan._replace(
            building=plan.newest() + 1,
            building_version=version,
            building_partitions=partitions,
            retired=plan.retired + old,
            switching=False,
        )
    elif await _ready(store, view, plan):
        new, version_, split = plan.building, plan.building_version, plan.building_partitions
        assert new is not None and version_ is not None and split is not None
        if _advancing(plan) and not plan.switching:  # first stop what serves, everywhere
            plan = plan._replace(switching=True)
        elif not _advancing(plan) or await _stopped(store, view, plan):
            plan = Plan(new, version_, split, retired=(*plan.retired, plan.generation))
    return await _retire(store, view, plan), None


def _advancing(plan: Plan) -> bool:
    """Whether the serving generation still advances while the building one builds (the same
    version and split rebuilt): the switch then has two phases, so that nobody who waited for
    a position on the serving generation reads the new one before it has that position too."""
    return (plan.version, plan.partitions) == (plan.building_version, plan.building_partitions)


def switch_checkpoint(projection: str, generation: int) -> str:
    """Where a partition notes the position at which it stopped the serving generation, for
    the switch to ``generation``."""
    return f"projection:{projection}:switch:g{generation}"


async def _stopped(store: EventStore, view: View, plan: Plan) -> bool:
    """Whether every partition has stopped the serving generation and built the new one at
    least as far."""
    assert plan.building is not None
    name = view.projection.name
    for k in range(plan.partitions):
        stop = await store.load_checkpoint(switch_checkpoint(name, plan.building), k)
        built = await store.load_checkpoint(checkpoint_name(name, plan.building), k)
        if stop is None or (built.position if built else Position(0)) < stop.position:
            return False
    return True


async def _ready(store: EventStore, view: View, plan: Plan) -> bool:
    """Whether the build has reached what serves: each partition what it serves, or, split
    differently, each new partition what the slowest old one served."""
    lane, p = view.building, view.projection
    if plan.building is None or lane is None or lane.generation != plan.building:
        return False
    if not lane.caught_up:
        return False
    new_name = checkpoint_name(p.name, plan.building)
    old_name = checkpoint_name(p.name, plan.generation)
    old = [await store.load_checkpoint(old_name, k) for k in range(plan.partitions)]
    new = [await store.load_checkpoint(new_name, k) for k in range(p.partitions)]
    if plan.partitions == p.partitions:
        floors = [None if o is None else o.position for o in old]
    else:
        lowest = min((o.position for o in old if o is not None), default=None)
        floors = [lowest] * p.partitions
    return all(
        f is None or (n is not None and n.position >= f) for f, n in zip(floors, new, strict=True)
    )


async def _retire(store: EventStore, view: View, plan: Plan) -> Plan:
    """The plan, its retired generations let go once every partition follows it.

    A partition follows the plan when its status row shows the plan's serving and building
    generations: it then never touches a retired one again. (One that has not, even one
    without a status row yet, may be about to load an older plan's generation.) Partitions
    beyond this process's count (from an earlier split) count once no one holds them.
    """
    if not plan.retired:
        return plan
    p = view.projection
    rows = await _partition_rows(store, p.name)
    if not all(k in rows and _follows(rows[k], plan) for k in range(p.partitions)):
        return plan
    behind = {k for k, r in rows.items() if not _follows(r, plan)}
    # partitions this process does not have, still held
    if behind and behind & await _held(store, p.name):
        return plan
    return plan._replace(retired=())


async def _partition_rows(store: EventStore, name: str) -> dict[int, dict[str, Any]]:
    """The status rows of the projection's partitions (of any split), by partition."""
    prefix = f"{name}/"
    return {
        int(r["name"][len(prefix) :]): r
        for r in await store.read_table(STATUS.name)
        if r["name"].startswith(prefix) and r["name"][len(prefix) :].isdigit()
    }


async def _held(store: EventStore, name: str) -> set[int]:
    """The partitions whose lease someone holds now."""
    now_us = time.time_ns() // 1000
    rows = await store.read_table(LEASES.name, {"name": name})
    return {r["partition"] for r in rows if r["expires_at"] > now_us}


async def _prune(store: EventStore, view: View, plan: Plan) -> list[TableWrite]:
    """Writes that delete what partitions of an earlier, larger split left behind (status
    rows, pending requests, dead letters) once no one holds them."""
    p = view.projection
    split = max(plan.partitions, plan.building_partitions or 0, p.partitions)
    keys = {k: r["name"] for k, r in (await _partition_rows(store, p.name)).items()}
    prefix = f"{p.name}/"
    for r in await store.read_table(REQUESTS.name):  # queued from a status read just pruned
        tail = r["projection"][len(prefix) :] if r["projection"].startswith(prefix) else ""
        if tail.isdigit():
            keys.setdefault(int(tail), r["projection"])
    extra = {k: key for k, key in keys.items() if k >= split}
    if not extra:
        return []
    writes: list[TableWrite] = []
    held = await _held(store, p.name)
    for k, key in extra.items():
        if k in held:
            continue
        writes.append(TableWrite.delete(STATUS.name, {"name": key}))
        for r in await store.read_table(REQUESTS.name, {"projection": key}):
            writes.append(TableWrite.delete(REQUESTS.name, {"id": r["id"]}))
        writes += await dead_letters.forget_key(store, key)
    return writes


def _follows(row: dict[str, Any], plan: Plan) -> bool:
    return (row["generation"], row["building"]) == (plan.generation, plan.building)


async def _collect(store: EventStore, view: View, new: Plan, old: Plan | None) -> list[TableWrite]:
    """Writes that drop the tables and dead letters of generations the new plan let go."""
    if old is None:
        return []
    gone = set(old.retired) - set(new.retired) - {new.generation, new.building}
    p = view.projection
    writes: list[TableWrite] = []
    for generation in sorted(gone):
        writes += drop_tables(p, generation)
        writes += await dead_letters.forget_generation(store, p.name, generation)
    return writes


async def _follow(
    store: EventStore, view: View, plan: Plan | None, writes: list[TableWrite], error: str | None
) -> tuple[Follow | None, str | None, tuple[tuple[str, Position], ...]]:
    """This partition's lanes aligned with the plan (None: as they are), its last_error, and
    the checkpoint that says where it stopped the serving generation (the plan switching)."""
    if plan is None:  # no leader has run yet: wait for it, advancing nothing
        active = view.active.generation
        return Follow(view.plan, active, True, None, {}, view.outdated, False), WAITING, ()
    if view.plan == plan:
        return None, error, ()
    if error is not None and error.startswith(_NOTES):
        error = None
    lanes = view.lanes() if view.plan is not None else {}
    p, k, key = view.projection, view.partition, view.key
    shape = _shape(view)
    loaded: dict[int, Lane] = {}
    found = lanes.get(plan.generation)
    if found is None or found.version != plan.version:
        found = None
        loaded[plan.generation] = await load_lane(store, p, k, key, plan.generation, plan.version)
    frozen = (plan.version, plan.partitions) != shape
    building = None
    if plan.building is not None and (plan.building_version, plan.building_partitions) == shape:
        building = plan.building
        if building not in lanes:
            loaded[building] = await load_lane(store, p, k, key, building, shape[0])
    if frozen and building is None:
        error = _held_back(view, plan)
    for generation in set(lanes) - {plan.generation, plan.building}:
        writes += await dead_letters.forget(store, key, generation)
    stopped: tuple[tuple[str, Position], ...] = ()
    if plan.switching and building is not None and not frozen:
        frozen = True  # never advanced again: the switch follows
        applied = loaded[plan.generation].applied if found is None else found.applied
        stopped = ((switch_checkpoint(p.name, building), applied or Position(0)),)
    before = None if view.building is None else view.building.generation
    changed = (  # another lane object serves or builds
        plan.generation in loaded
        or plan.generation != view.active.generation
        or building in loaded
        or building != before
        or bool(stopped)
    )
    outdated = plan.version > shape[0]
    return (
        Follow(plan, plan.generation, frozen, building, loaded, outdated, changed),
        error,
        stopped,
    )


def _held_back(view: View, plan: Plan) -> str:
    """Why this partition advances nothing under ``plan``."""
    p = view.projection
    if p.version == plan.version:
        return (
            f"{SPLIT} {p.name} into {p.partitions} partitions; generation {plan.generation} "
            f"was built with {plan.partitions}: run `chronik projections rebuild {p.name}` "
            "(or bump its version) to split it anew"
        )
    return f"{OLDER} {p.version} of {p.name}, version {plan.version} " + (
        "serves: partition 0 has not started to build the new version yet"
        if p.version > plan.version
        else "serves: this partition waits for a process running that version"
    )
