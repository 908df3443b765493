"""Repartition: a partitioned projection changes its partition count without a rebuild.

The steps (all state is in the store; each step is one unit of work of one partition's
processor, so a worker killed at any point leaves a state the next owner carries on from):

1. request: ``ProjectionAdmin.repartition`` queues a request to partition 0 (the leader of
   the split the plan serves; a leader of an old split, not yet replaced by its worker, leaves
   the request queued for it), which checks it can be done (see ``refusal``) and publishes a
   pending repartition, the row ``{name}.repartition`` of ``chronik_projection_plans`` (the
   serving generation and version, the split it runs, ``building_partitions``, and the one it
   asks for, ``partitions``) with a ``nonce`` of its own in ``retired``.
2. stop: every partition of that generation and split stops its serving lane where it is and
   notes the position (checkpoint ``projection:{name}:rp{nonce}:stop`` of its partition).
3. the common position: once every partition noted, the leader publishes P = the highest note
   (checkpoint ``...:at``). Every partition then advances to exactly P, processing its own
   events only: a page is cut at P and a partition at P reads nothing more.
4. switch: once every partition's checkpoint is P, the leader commits, as one unit of work, the
   plan with the new count, the layout row ``{name}.layout`` (its ``generation`` column holds
   the layout's round: what every worker of that version runs from now on, whatever its code
   says), each new partition's checkpoint = P written with a fencing epoch one above the epoch
   of its lease (a processor of the old split holds that epoch at most: it can never commit to
   the generation again), and the pending row's delete.
5. workers (``chronik.projections.workers``) read the layout row at each heartbeat; when it
   differs from what they run they stop their processors (releasing the leases) and run the
   new split, whose processors claim the leases as ``r{round}~{owner}``: a new owner, so the
   lease epoch grows and passes the fence.

Why the rows equal a rebuild's: every event up to P was applied by exactly one old partition,
in stream order, and none after P; after the switch every event after P is applied by exactly
one new partition, in stream order. Rows keyed per stream (what partitioning requires) see the
same events in the same order as in a rebuild.

Refused, with the reason as the leader's ``last_error`` (and checked up front by the admin):
another count than 2..256 or the same count; a projection that never ran partitioned; a
rebuild, reset or new version in progress; a repartition in progress; a paused partition; dead
letters of the serving generation (a parked stream's later events wait under the partition that
parked them: retry or drop them first); ``replay="refuse"`` (its replay marks are kept per
partition). A repartition in progress is abandoned (the pending row deleted, the partitions run
on in the old split) if a rebuild or new version starts or an event is parked meanwhile.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from chronik.errors import ValidationError
from chronik.messages import Position
from chronik.projections import dead_letters
from chronik.projections.bookkeeping import PLANS, STATUS, Plan, load_plan
from chronik.projections.lanes import START, View, checkpoint_name
from chronik.store import leases
from chronik.store.base import EventStore, TableWrite

__all__ = [
    "MAX_PARTITIONS",
    "Hold",
    "Layout",
    "Pending",
    "check_count",
    "hold",
    "load_layout",
    "load_pending",
    "refusal",
    "request",
]

MAX_PARTITIONS = 256


class Layout(NamedTuple):
    """The split a repartition set for one version of a projection (``round`` counts them)."""

    round: int
    version: int
    partitions: int


class Pending(NamedTuple):
    """A repartition in progress."""

    nonce: str
    generation: int
    version: int
    source: int  # the split that runs
    target: int  # the split asked for

    def stop_name(self, projection: str) -> str:
        """Where each partition notes the position it stopped at."""
        return f"projection:{projection}:rp{self.nonce}:stop"

    def at_name(self, projection: str) -> str:
        """Where the leader publishes the common position P (partition 0)."""
        return f"projection:{projection}:rp{self.nonce}:at"


@dataclass(frozen=True, slots=True)
class Hold:
    """What a partition does about a repartition this heartbeat (the processor applies it)."""

    stop_at: Position | None = None  # where the serving lane stops (None: it runs on)
    writes: list[TableWrite] = field(default_factory=list)
    checkpoints: tuple[tuple[str, Position], ...] = ()  # of this partition, with its epoch
    fenced: tuple[tuple[str, Position, int, int], ...] = ()  # (name, position, partition, epoch)
    error: str | None = None  # a new last_error (the leader: why it gave up)


def check_count(partitions: object) -> int:
    """The partition count asked for, checked; ValidationError naming ``partitions``."""
    if type(partitions) is not int or not 2 <= partitions <= MAX_PARTITIONS:
        raise ValidationError(
            f"invalid partitions {partitions!r}: expected an int 2..{MAX_PARTITIONS}",
            field="partitions",
        )
    return partitions


def _layout_key(name: str) -> str:
    return f"{name}.layout"


def _pending_key(name: str) -> str:
    return f"{name}.repartition"


async def load_layout(store: EventStore, name: str) -> Layout | None:
    """The split a repartition set for projection ``name``, or None (its code's count)."""
    plan = await load_plan(store, _layout_key(name))
    return None if plan is None else Layout(plan.generation, plan.version, plan.partitions)


async def load_pending(store: EventStore, name: str) -> Pending | None:
    """The repartition of ``name`` in progress, or None."""
    rows = await store.read_table(PLANS.name, {"name": _pending_key(name)}, limit=1)
    if not rows:
        return None
    r = rows[0]
    return Pending(
        r["retired"], r["generation"], r["version"], r["building_partitions"], r["partitions"]
    )


def _pending_write(name: str, p: Pending) -> TableWrite:
    values = {
        "name": _pending_key(name),
        "generation": p.generation,
        "version": p.version,
        "partitions": p.target,
        "building": None,
        "building_version": None,
        "building_partitions": p.source,
        "switching": 0,
        "retired": p.nonce,
    }
    return TableWrite.upsert(PLANS.name, values, ("name",))


async def refusal(store: EventStore, name: str, partitions: int) -> str | None:
    """Why projection ``name`` cannot be split into ``partitions`` now (None: it can), from
    what the store holds (the leader also checks what only its code knows)."""
    plan = await load_plan(store, name)
    if plan is None:
        return f"projection {name} has not run partitioned: set partitions= in its code"
    if plan.building is not None or plan.switching:
        return f"projection {name} is being rebuilt (generation {plan.building}): wait for it"
    if await load_pending(store, name) is not None:
        return f"a repartition of {name} is in progress"
    if partitions == plan.partitions:
        return f"projection {name} already runs {partitions} partitions"
    keys = {f"{name}/{k}" for k in range(plan.partitions)}
    for r in await store.read_table(STATUS.name):
        if r["name"] in keys and r["state"] == "paused":
            return f"partition {r['name']} is paused: resume it first"
    parking = await dead_letters.parking_partition(store, name, plan.generation, plan.partitions)
    if parking is not None:
        return (
            f"partition {parking} has dead letters: retry or drop them first (a "
            "parked stream's events wait under the partition that parked them)"
        )
    return None


async def request(
    store: EventStore, view: View, arg: str
) -> tuple[list[TableWrite], str | None] | None:
    """The leader's answer to a repartition request: the pending row to write, or why not;
    None when this leader does not run the version and split the plan serves (a leader of an
    old split, not yet replaced by its worker, or of another version): the request waits for
    the one that does."""
    p = view.projection
    plan = await load_plan(store, p.name)
    if plan is not None and (plan.version, plan.partitions) != (p.version, p.partitions):
        return None
    try:
        target = check_count(int(arg) if arg.isdigit() else arg)
    except ValidationError as exc:
        return [], f"repartition refused: {exc}"
    why = await refusal(store, p.name, target)
    if why is None and p.replay == "refuse":
        why = f"projection {p.name} declared replay='refuse': its replay marks are per partition"
    if why is not None or plan is None:
        return [], f"repartition refused: {why}"
    pending = Pending(uuid.uuid4().hex, plan.generation, plan.version, plan.partitions, target)
    return [_pending_write(p.name, pending)], None


def _abandon(name: str, why: str) -> Hold:
    return Hold(
        writes=[TableWrite.delete(PLANS.name, {"name": _pending_key(name)})],
        error=f"repartition abandoned: {why}",
    )


async def hold(store: EventStore, view: View) -> Hold:
    """Where this partition stops for a repartition in progress, what it notes, and (the
    leader) the common position or the switch (see the module docstring)."""
    p, k, plan = view.projection, view.partition, view.plan
    pending = await load_pending(store, p.name)
    if pending is None:
        # switched since this partition last followed the plan: held until it follows anew
        held = view.active.stop_at
        if held is not None and await load_plan(store, p.name) != plan:
            return Hold(stop_at=held)
        return Hold()
    shape = (pending.generation, pending.version, pending.source)
    if plan is None or (plan.generation, plan.version, plan.partitions) != shape:
        if k == 0 and plan is not None:
            return _abandon(p.name, f"generation {plan.generation} serves now")
        return Hold()
    if (p.version, p.partitions) != shape[1:] or view.active.generation != pending.generation:
        return Hold()  # this process splits otherwise: the plan holds it back already
    if k == 0 and (plan.building is not None or plan.switching):
        return _abandon(p.name, "a rebuild or a new version started")
    stop, at_name = pending.stop_name(p.name), pending.at_name(p.name)
    at = await store.load_checkpoint(at_name, 0)
    if at is not None:
        if k == 0:
            return await _switch(store, view, pending, plan, at.position)
        return Hold(stop_at=at.position)
    noted = await store.load_checkpoint(stop, k)
    here = noted.position if noted is not None else view.active.applied or START
    mine = () if noted is not None else ((stop, here),)
    if k != 0:
        return Hold(stop_at=here, checkpoints=mine)
    notes = [here] + [await _position(store, stop, j) for j in range(1, pending.source)]
    if any(n is None for n in notes):
        return Hold(stop_at=here, checkpoints=mine)
    common = max(n for n in notes if n is not None)
    return Hold(stop_at=common, checkpoints=(*mine, (at_name, common)))


async def _position(store: EventStore, name: str, partition: int) -> Position | None:
    found = await store.load_checkpoint(name, partition)
    return None if found is None else found.position


async def _switch(
    store: EventStore, view: View, pending: Pending, plan: Plan, common: Position
) -> Hold:
    """The leader's switch, once every partition's checkpoint is at the common position."""
    name = view.projection.name
    gen = checkpoint_name(name, pending.generation)
    for j in range(pending.source):
        at = await _position(store, gen, j)
        if (at or START) < common:
            return Hold(stop_at=common)
    parking = await dead_letters.parking_partition(store, name, pending.generation, pending.source)
    if parking is not None:
        return _abandon(name, f"partition {parking} parked an event")
    epochs = {lease.partition: lease.epoch for lease in await leases.holders(store, name)}
    layout = await load_layout(store, name)
    round_ = (layout.round if layout is not None else 0) + 1
    new_plan = plan._replace(partitions=pending.target)
    layout_row = Plan(round_, pending.version, pending.target).write(_layout_key(name))
    fenced = tuple(
        (gen, common, j, epochs.get(j, 0) + 1) for j in range(max(pending.source, pending.target))
    )
    return Hold(
        stop_at=common,
        writes=[
            new_plan.write(name),
            layout_row,
            TableWrite.delete(PLANS.name, {"name": _pending_key(name)}),
        ],
        fenced=fenced,
    )
