"""Lanes: the generations of a projection's tables a processor advances, and their cleanup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronik.messages import Position
from chronik.projections.system import DEAD_LETTERS
from chronik.store.base import TableSpec, TableWrite

if TYPE_CHECKING:
    from chronik.projections.processor import ProjectionProcessor

__all__ = [
    "Lane",
    "checkpoint_name",
    "delete_letter",
    "drop_tables",
    "ensure_tables",
    "forget_dead_letters",
    "load_lane",
    "specs",
]


def checkpoint_name(projection: str, generation: int) -> str:
    """The checkpoint name of one generation of a projection."""
    return f"projection:{projection}:g{generation}"


class Lane:
    """One generation of a projection's tables with its own checkpoint and parked streams."""

    def __init__(self, generation: int, version: int, frozen: bool = False) -> None:
        self.generation = generation
        self.version = version
        self.frozen = frozen  # built by another version: serves reads, is not advanced
        self.position: Position | None = None  # read up to here (committed or committing)
        self.applied: Position | None = None  # committed up to here: what wait_for trusts
        self.parked: set[str] = set()
        self.dirty = False  # position advanced (scanned) without a checkpoint write yet
        self.caught_up = False
        self.isolate_until: Position | None = None  # one event per commit up to here

    def checkpoint(self, projection: str) -> str:
        """The checkpoint name of this generation."""
        return checkpoint_name(projection, self.generation)

    def __repr__(self) -> str:
        return f"<Lane g{self.generation} v{self.version} at {self.position}>"


async def load_lane(proc: ProjectionProcessor, generation: int, version: int) -> Lane:
    """A lane of ``proc``'s partition as the database has it: checkpoint and parked streams."""
    lane = Lane(generation, version, frozen=version != proc.projection.version)
    name = lane.checkpoint(proc.projection.name)
    checkpoint = await proc.store.load_checkpoint(name, proc.partition)
    lane.position = lane.applied = checkpoint.position if checkpoint else None
    await proc._load_parked(lane)
    return lane


def specs(proc: ProjectionProcessor, generation: int) -> list[TableSpec]:
    """The table specs of one generation of the projection."""
    return [t.spec(generation) for t in proc.projection.tables.values()]


def ensure_tables(proc: ProjectionProcessor, generation: int) -> list[TableWrite]:
    """Writes that create one generation's tables if they are missing."""
    return [TableWrite("ensure", s.name, spec=s) for s in specs(proc, generation)]


def drop_tables(proc: ProjectionProcessor, generation: int) -> list[TableWrite]:
    """Writes that drop one generation's tables."""
    return [TableWrite("drop", s.name) for s in specs(proc, generation)]


def delete_letter(name: str, generation: int, event_id: str) -> TableWrite:
    """The write that deletes one dead letter."""
    values = {"projection": name, "generation": generation, "event_id": event_id}
    return TableWrite.delete(DEAD_LETTERS.name, values)


async def forget_dead_letters(proc: ProjectionProcessor, generation: int) -> list[TableWrite]:
    """Writes that delete this processor's dead letters of one generation."""
    rows = await proc.store.read_table(
        DEAD_LETTERS.name, {"projection": proc.key, "generation": generation}
    )
    return [delete_letter(proc.key, generation, r["event_id"]) for r in rows]
