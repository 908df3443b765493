"""Generations of a partitioned projection: one plan for every partition, led by partition 0.

All partitions write into the same tables (``name__g{n}``), so a rebuild, a reset to the start
or a new version moves them to a new generation together. The plan (a row of
``chronik_projection_plans``) says which generation serves and which one builds. Only the owner
of partition 0, the leader, changes it, inside its own units of work, which carry its lease
write: a leader that lost its lease cannot change the plan any more.

Every partition follows the plan at its heartbeat. It serves the serving generation and builds
the building one from its own checkpoint of that generation. The leader switches the plan once
each partition's checkpoint of the building generation has reached its checkpoint of the
serving one. It drops retired generations' tables, and their dead letters, once every
partition's status row shows it follows the plan. Followers never create or drop tables: the
leader creates a generation's tables in the unit of work that publishes it.

A process whose projection version is older than the one the plan serves never changes the
plan (its lanes stay frozen), so a rolling upgrade never flips back; a newer version makes the
leader build it while the old one serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chronik.projections.lanes import (
    checkpoint_name,
    delete_letter,
    drop_tables,
    ensure_tables,
    forget_dead_letters,
    load_lane,
)
from chronik.projections.system import DEAD_LETTERS, STATUS, Plan, load_plan
from chronik.store.base import TableWrite

if TYPE_CHECKING:
    from chronik.projections.processor import ProjectionProcessor

__all__ = ["poll", "setup"]

WAITING = "waiting for partition 0 to publish the projection's generations"
OLDER = "this process runs version"
_NOTES = (WAITING, OLDER)  # what last_error says while the plan holds a partition back


async def setup(proc: ProjectionProcessor, row: dict[str, Any]) -> None:
    """Set up a partition that was just claimed: load its lanes as the plan says."""
    proc.plan = None
    await poll(proc, row=row)


async def poll(
    proc: ProjectionProcessor,
    request: str | None = None,
    writes: list[TableWrite] | None = None,
    row: dict[str, Any] | None = None,
) -> None:
    """Follow the plan (the leader first changes it: ``request`` rebuild or reset, a new
    version, a switch, retired tables); commit ``writes`` with whatever changed."""
    name = proc.projection.name
    writes = list(writes or ())
    plan = await load_plan(proc.store, name)
    if proc.partition == 0:
        new = await _lead(proc, plan, request, row)
        if new != plan:
            writes.append(new.write(name))
            published = {new.generation, new.building} - (
                set() if plan is None else {plan.generation, plan.building}
            )
            for generation in sorted(g for g in published if g is not None):
                if _version_of(new, generation) == proc.projection.version:
                    writes += ensure_tables(proc, generation)
            writes += await _collect(proc, new, plan)
            plan = new
    changed = await _follow(proc, plan, writes)
    if writes or changed or row is not None:
        await proc._commit(writes)
    if changed:
        proc._resolve_waiters()


def _version_of(plan: Plan, generation: int) -> int | None:
    return plan.version if generation == plan.generation else plan.building_version


async def _lead(
    proc: ProjectionProcessor,
    plan: Plan | None,
    request: str | None,
    row: dict[str, Any] | None,
) -> Plan:
    """The plan after this heartbeat of the leader."""
    version = proc.projection.version
    if plan is None:  # first run (or a store from before plans): what partition 0 served
        row = row or {}
        plan = Plan(row.get("generation") or 1, row.get("version") or version)
    if version < plan.version:  # older code than what serves: never change the plan
        if request is not None:
            proc.last_error = (
                f"{request} refused: this process runs version {version} of "
                f"{proc.projection.name}, older than the version {plan.version} that serves"
            )
        return await _retire(proc, plan)
    if request == "reset":  # start over now: a new, empty serving generation
        old = (plan.generation, *([plan.building] if plan.building else []))
        plan = Plan(plan.newest() + 1, version, None, None, plan.retired + old)
    elif request == "rebuild" or (
        version > plan.version and (plan.building_version or 0) < version
    ):  # build a new generation while the current one serves
        old = (plan.building,) if plan.building else ()
        plan = plan._replace(
            building=plan.newest() + 1, building_version=version, retired=plan.retired + old
        )
    elif await _ready(proc, plan):
        assert plan.building is not None and plan.building_version is not None
        plan = Plan(
            plan.building, plan.building_version, None, None, (*plan.retired, plan.generation)
        )
    return await _retire(proc, plan)


async def _ready(proc: ProjectionProcessor, plan: Plan) -> bool:
    """Whether every partition's build has reached what that partition serves."""
    lane, p, store = proc.building, proc.projection, proc.store
    if plan.building is None or lane is None or lane.generation != plan.building:
        return False
    if not lane.caught_up:
        return False
    new_name = checkpoint_name(p.name, plan.building)
    old_name = checkpoint_name(p.name, plan.generation)
    for k in range(p.partitions):
        old = await store.load_checkpoint(old_name, k)
        if old is None:
            continue
        new = await store.load_checkpoint(new_name, k)
        if new is None or new.position < old.position:
            return False
    return True


async def _retire(proc: ProjectionProcessor, plan: Plan) -> Plan:
    """The plan, its retired generations let go once every partition follows it.

    A partition follows the plan when its status row shows the plan's serving and building
    generations: it then never touches a retired one again. (One that has not, even one
    without a status row yet, may be about to load an older plan's generation.)
    """
    if not plan.retired:
        return plan
    p = proc.projection
    names = {f"{p.name}/{k}" for k in range(p.partitions)}
    rows = [r for r in await proc.store.read_table(STATUS.name) if r["name"] in names]
    following = len(rows) == p.partitions and all(
        (r["generation"], r["building"]) == (plan.generation, plan.building) for r in rows
    )
    return plan._replace(retired=()) if following else plan


async def _collect(proc: ProjectionProcessor, new: Plan, old: Plan | None) -> list[TableWrite]:
    """Writes that drop the tables and dead letters of generations the new plan let go."""
    if old is None:
        return []
    gone = set(old.retired) - set(new.retired) - {new.generation, new.building}
    prefix = f"{proc.projection.name}/"
    writes: list[TableWrite] = []
    for generation in sorted(gone):
        writes += drop_tables(proc, generation)
        for r in await proc.store.read_table(DEAD_LETTERS.name, {"generation": generation}):
            if r["projection"].startswith(prefix):
                writes.append(delete_letter(r["projection"], generation, r["event_id"]))
    return writes


async def _follow(proc: ProjectionProcessor, plan: Plan | None, writes: list[TableWrite]) -> bool:
    """Align this partition's lanes with the plan; whether they changed."""
    if plan is None:  # no leader has run yet: wait for it, advancing nothing
        proc.active.frozen = True
        proc.building = None
        proc.last_error = WAITING
        return False
    if proc.plan == plan:
        return False
    if proc.last_error is not None and proc.last_error.startswith(_NOTES):
        proc.last_error = None
    lanes = {lane.generation: lane for lane in proc._lanes()} if proc.plan is not None else {}
    proc.plan = plan
    version = proc.projection.version
    active = lanes.get(plan.generation)
    if active is None or active.version != plan.version:
        active = await load_lane(proc, plan.generation, plan.version)
    building = None
    if plan.building is not None and plan.building_version == version:
        building = lanes.get(plan.building) or await load_lane(proc, plan.building, version)
    before = (proc.active, proc.building)
    proc.active, proc.building = active, building
    if active.frozen and building is None:
        proc.last_error = (
            f"{OLDER} {version} of {proc.projection.name}, version {plan.version} "
            + (
                "serves: partition 0 has not started to build the new version yet"
                if version > plan.version
                else "serves: this partition waits for a process running that version"
            )
        )
    for generation in set(lanes) - {plan.generation, plan.building}:
        writes += await forget_dead_letters(proc, generation)
    return (proc.active, proc.building) != before
