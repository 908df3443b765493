"""Projection admin: what the CLI, the HTTP API, gRPC and the admin UI do to projections.

``ProjectionAdmin`` reads the bookkeeping tables (``chronik.projections.bookkeeping``) of any
store and queues control requests (pause / resume / reset / rebuild / retry / refresh, and
repartition through ``repartition``) that the
processor of a projection picks up within a heartbeat, from whatever process runs it; dropping
dead letters deletes them here and tells the processor to reload its parked streams.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from chronik.errors import UnknownProjection, ValidationError
from chronik.health import horizon_lag
from chronik.messages import Position, new_event_id
from chronik.projections.bookkeeping import DEAD_LETTERS, LEASES, REQUESTS, STATUS, lag_events
from chronik.projections.dead_letters import DeadLetter, delete, from_rows
from chronik.projections.repartition import check_count, refusal
from chronik.store.base import EventStore, TableWrite

__all__ = ["ACTIONS", "ALIVE_SECONDS", "ProjectionAdmin", "ProjectionStatus"]

ACTIONS: Final = frozenset({"pause", "resume", "reset", "rebuild", "retry", "refresh"})
ALIVE_SECONDS: Final = 5.0  # a heartbeat older than this means no processor is running


class ProjectionStatus(msgspec.Struct):
    """What ``chronik projections status`` shows of one projection."""

    name: str
    state: str
    version: int
    generation: int
    building: int | None
    position: str | None
    build_position: str | None
    head: str | None
    lag_events: int
    lag_seconds: float
    events_per_s: float
    processed: int
    last_error: str | None
    heartbeat: float | None  # unix seconds
    alive: bool
    owner: str | None
    dead_letters: int = 0
    #: committed events no reader may pass yet: an older transaction still runs (PostgreSQL)
    horizon_events: int = 0
    horizon_seconds: float = 0.0  # the age of the oldest running transaction then

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def _lease_key(status_name: str) -> tuple[str, int]:
    """The lease of a status row: ``name`` -> (name, 0), ``name/k`` -> (name, k)."""
    base, _, k = status_name.partition("/")
    return (base, int(k)) if k.isdigit() else (status_name, 0)


class ProjectionAdmin:
    """Reads and changes projection bookkeeping from any process (the CLI uses this)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def _read(
        self,
        table: str,
        where: dict[str, Any] | None = None,
        order_by: tuple[str, ...] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of a bookkeeping table (the store's migrations created it)."""
        return await self.store.read_table(table, where, order_by, limit)

    async def names(self) -> list[str]:
        """The projections that have ever reported a status, sorted (``name/k``: partitions)."""
        rows = await self._read(STATUS.name, order_by=("name",))
        return [r["name"] for r in rows]

    async def check(self, name: str) -> list[str]:
        """The status rows ``name`` stands for (itself, or all partitions of a partitioned
        projection); UnknownProjection, listing the known ones, if there are none."""
        known = await self.names()
        rows = [n for n in known if n == name or n.startswith(f"{name}/")]
        if not rows:
            bases = sorted({n.split("/")[0] for n in known})
            raise UnknownProjection(name, bases)
        return rows

    async def statuses(self) -> list[ProjectionStatus]:
        """The status of every projection, with head and lag computed now."""
        store = self.store
        head = await store.head()
        rows = await self._read(STATUS.name, order_by=("name",))
        letters = await self._read(DEAD_LETTERS.name)
        held = {
            (r["name"], r["partition"]): r["expires_at"] / 1e6
            for r in await self._read(LEASES.name)
        }
        now = time.time()
        horizon = await horizon_lag(store)
        behind = (0, 0.0)
        if horizon is not None and horizon.pending_events:
            behind = (horizon.pending_events, round(horizon.oldest_transaction_seconds or 0.0, 3))
        out = []
        for r in rows:
            position = Position.parse(r["position"]) if r["position"] else None
            heartbeat = r["heartbeat"] / 1e6 if r["heartbeat"] else None
            # alive: a recent heartbeat from an owner whose lease is not released or expired
            alive = (
                heartbeat is not None
                and now - heartbeat < ALIVE_SECONDS
                and held.get(_lease_key(r["name"]), 0.0) > now
            )
            lag = lag_events(position, head)
            lag_seconds = 0.0
            if lag:
                async for e in store.read_all(after=position, limit=1):
                    lag_seconds = max(0.0, now - e.recorded_at_us / 1e6)
            out.append(
                ProjectionStatus(
                    name=r["name"],
                    state=r["state"] if alive else "stopped",
                    version=r["version"] or 1,
                    generation=r["generation"] or 1,
                    building=r["building"],
                    position=r["position"],
                    build_position=r["build_position"],
                    head=None if head is None else str(head),
                    lag_events=lag,
                    lag_seconds=round(lag_seconds, 3),
                    events_per_s=round(r["events_per_s"] or 0.0, 1) if alive else 0.0,
                    processed=r["processed"] or 0,
                    last_error=r["last_error"],
                    heartbeat=heartbeat,
                    alive=alive,
                    owner=r["owner"],
                    dead_letters=sum(
                        1
                        for d in letters
                        if d["projection"] == r["name"] and d["generation"] == r["generation"]
                    ),
                    horizon_events=behind[0],
                    horizon_seconds=behind[1],
                )
            )
        return out

    async def status(self, name: str) -> ProjectionStatus:
        """The status of one projection (or one partition, ``name/k``); UnknownProjection if
        there is none."""
        for s in await self.statuses():
            if s.name == name:
                return s
        raise UnknownProjection(name, await self.names())

    async def status_of(self, name: str) -> list[ProjectionStatus]:
        """The status rows of a projection: one, or one per partition."""
        targets = set(await self.check(name))
        return [s for s in await self.statuses() if s.name in targets]

    async def request(self, name: str, action: str, arg: str = "") -> str:
        """Queue a control request for the processor of ``name``; returns the request id."""
        if action not in ACTIONS:
            raise ValidationError(f"unknown action {action!r}", field="action")
        targets = await self.check(name)
        if action in ("rebuild", "reset"):  # refused whole if it would repeat side effects
            from chronik.replay_marks import check_replay

            await check_replay(self.store, name, action, arg)
        request_id = new_event_id()
        rows = [
            {
                "id": f"{request_id}.{i}",
                "projection": target,
                "action": action,
                "arg": arg,
                "created_at": time.time_ns() // 1000,
            }
            for i, target in enumerate(targets)
        ]
        async with self.store.transaction() as tx:
            tx.write_tables([TableWrite.upsert(REQUESTS.name, row, ("id",)) for row in rows])
        return request_id

    async def repartition(self, name: str, partitions: object) -> str:
        """Queue a repartition of ``name`` into ``partitions`` partitions, without a rebuild
        (see chronik.projections.repartition); its leader, partition 0, carries it out.
        ValidationError naming the field, with the reason, when it cannot be done now."""
        count = check_count(partitions)
        if f"{name}/0" not in await self.check(name):
            raise ValidationError(
                f"projection {name} does not run in partitions: set partitions= in its code "
                "and rebuild it once",
                field="name",
            )
        why = await refusal(self.store, name, count)
        if why is not None:
            raise ValidationError(f"cannot repartition: {why}", field="partitions")
        request_id = new_event_id()
        row = {
            "id": f"{request_id}.0",
            "projection": f"{name}/0",
            "action": "repartition",
            "arg": str(count),
            "created_at": time.time_ns() // 1000,
        }
        async with self.store.transaction() as tx:
            tx.write_tables([TableWrite.upsert(REQUESTS.name, row, ("id",))])
        return request_id

    async def pending(self, request_id: str) -> bool:
        """Whether a request (to any partition) has not been picked up yet."""
        rows = await self._read(REQUESTS.name)
        return any(r["id"].startswith(f"{request_id}.") for r in rows)

    async def pending_for(self, name: str) -> bool:
        """Whether requests for ``name`` (or its partitions) wait for a processor."""
        rows = await self._read(REQUESTS.name)
        return any(r["projection"] == name or r["projection"].startswith(f"{name}/") for r in rows)

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        """Parked events of the projections' current generations, oldest first."""
        current = {r["name"]: r["generation"] for r in await self._read(STATUS.name)}
        targets = None if name is None else set(await self.check(name))
        rows = await self._read(
            DEAD_LETTERS.name, order_by=("projection", "position", "position_index")
        )
        return from_rows(rows, current, targets)

    async def drop_dead_letters(
        self, name: str, event_id: str | None = None, stream: str | None = None
    ) -> int:
        """Delete parked events (one, one stream's, or all of ``name``); returns how many.

        The dropped events are never applied. The processor is told to reload its parked
        streams: a stream with no dead letters left flows again.
        """
        letters = [
            d
            for d in await self.dead_letters(name)
            if (event_id is None or d.event_id == event_id)
            and (stream is None or d.stream == stream)
        ]
        if letters:
            async with self.store.transaction() as tx:
                tx.write_tables(delete(d.projection, d.generation, d.event_id) for d in letters)
            await self.request(name, "refresh")
        return len(letters)
