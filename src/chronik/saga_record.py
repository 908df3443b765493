"""The decision record of process managers: what a saga, reaction or deadline sent, and how
it went, so that a replay (reset, rebuild, new version, retry) never sends it again.

Every command a process manager sends is recorded in ``chronik_saga_record`` (a table of the
store's database that no rebuild or reset touches), keyed by (owner, command id); the command
id is derived from (owner, instance, triggering event, index), so the key is that tuple.
Sending is three steps: the intent is recorded (``pending``), the command is dispatched with
the derived id, the outcome is recorded (``accepted`` with the appended event ids, or
``rejected`` with the reason), each step committed on its own before the next.

When the same command id comes round again (a replay, or a retry after a failed batch), the
record answers instead of the outside world: an accepted or rejected command is not sent, and
its recorded outcome is fed back (``on_rejected`` runs with the recorded reason). A command that
differs from the recorded one (the code changed) yields to the record; this is logged once.

The crash window: a ``pending`` intent means the process died (or the dispatch failed) between
the dispatch and the outcome. It is resolved by dispatching again with the same command id: if
the first attempt was accepted, the command bus finds its events by that id and answers with
the original result (nothing is applied twice). If the first attempt was rejected, nothing of it
was stored, so the decision runs again against the state of today and may now be accepted.
That is the one guarantee chronik cannot strengthen without the business logic's help.

Past events: an event at or before the furthest point the process manager handled live in
any generation (its mark in ``chronik_replay_marks``, see chronik.replay_marks, or the
checkpoint of the generation that served before a rebuild) is past: its handler runs again to
rebuild state, but a command with no record for it is not sent, so new code acts only on events
after the switch (logged once). During the overlap of a blue/green build both generations
handle new events live; the derived command ids and the record let only one of them send each
command.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import msgspec

from chronik.errors import CommandRejected
from chronik.messages import Command, Position, RecordedEvent
from chronik.projections.lanes import checkpoint_name
from chronik.replay_marks import mark_write, past_mark
from chronik.store.base import EventStore, TableWrite
from chronik.store.tables import SAGA_RECORD
from chronik.store.tenant_reads import check_tenant_filter

if TYPE_CHECKING:
    from chronik.commands import Dispatch
    from chronik.projections.readmodel import ReadModel

__all__ = ["RECORD", "Outcome", "Recorder", "recorded_decisions"]

log = logging.getLogger("chronik.sagas")

RECORD: Final = SAGA_RECORD


class Outcome(NamedTuple):
    """What became of a command: ``accepted`` (``detail``: event ids, comma-separated),
    ``rejected`` (``detail``: the reason) or ``skipped`` (a past event's new command, not sent).
    ``command`` is the one that was sent (the recorded one on replay)."""

    kind: Literal["accepted", "rejected", "skipped"]
    command: Command
    detail: str = ""


def _encode(command: Command) -> str:
    body = {
        "domain": command.domain,
        "aggregate_id": command.aggregate_id,
        "tenant": command.tenant,
        "type": command.type,
        "payload": command.payload,
    }
    return msgspec.json.encode(body).decode()


def _decode(text: str, command_id: str, metadata: Any) -> Command:
    body = msgspec.json.decode(text)
    return Command(
        domain=body["domain"],
        aggregate_id=body["aggregate_id"],
        tenant=body["tenant"],
        type=body["type"],
        payload=body["payload"],
        command_id=command_id,
        metadata=metadata,
    )


async def recorded_decisions(
    store: EventStore, owner: str, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The decision record of ``owner`` (a saga or process manager), of the commands sent to
    one tenant (None: every tenant's): each row with its command's ``tenant``."""
    check_tenant_filter(tenant)
    rows = await store.read_table(RECORD.name, {"owner": owner}, ("recorded_at", "command_id"))
    out = [{**r, "tenant": msgspec.json.decode(r["command"]).get("tenant", "")} for r in rows]
    return [r for r in out if tenant is None or r["tenant"] == tenant]


class Recorder:
    """Sends the commands of one process manager through the decision record."""

    def __init__(self, owner: str, dispatch: Dispatch) -> None:
        self.owner = owner
        self.dispatch = dispatch
        self._seen: ReadModel | None = None
        self._mark: Position | None = None
        self._warned: set[str] = set()

    async def past(self, rm: ReadModel, event: RecordedEvent, partition: int = 0) -> bool:
        """Whether ``event`` was handled live before (in this or an earlier generation); if not,
        stage the mark's move to it with the handler's writes."""
        store = rm.store
        if self._seen is not rm:  # a new batch: the marks may have moved
            self._seen = rm
            self._mark = await past_mark(store, self.owner, partition)
            if rm.generation > 1:  # what the generation serving before this one handled
                name = checkpoint_name(self.owner, rm.generation - 1)
                before = await store.load_checkpoint(name, partition)
                if before is not None and (self._mark is None or before.position > self._mark):
                    self._mark = before.position
        if self._mark is not None and event.position <= self._mark:
            return True
        rm.writes.append(mark_write(self.owner, partition, rm.generation, event, None))
        return False

    async def recorded(self, store: EventStore, event: RecordedEvent) -> dict[str, dict[str, Any]]:
        """The record of the commands sent for ``event``, by command id."""
        rows = await store.read_table(
            RECORD.name, {"owner": self.owner, "event_id": event.event_id}
        )
        return {r["command_id"]: r for r in rows}

    def warn_once(self, kind: str, message: str, *args: object) -> None:
        """Log a replay oddity once per kind (not once per event)."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    async def _write(
        self, store: EventStore, command: Command, instance: str, event: RecordedEvent, **row: Any
    ) -> None:
        values = {
            "owner": self.owner,
            "command_id": command.command_id,
            "instance_id": instance,
            "event_id": event.event_id,
            "command": _encode(command),
            **row,
            "recorded_at": event.recorded_at_us,
        }
        async with store.transaction() as tx:
            tx.write_tables([TableWrite.upsert(RECORD.name, values, ("owner", "command_id"))])

    async def send(
        self,
        store: EventStore,
        command: Command,
        instance: str,
        event: RecordedEvent,
        *,
        past: bool,
        record: dict[str, dict[str, Any]],
    ) -> Outcome:
        """Send ``command`` (its id already derived) unless the record already has it."""
        assert command.command_id is not None
        row = record.get(command.command_id)
        if row is not None and row["command"] != _encode(command):
            self.warn_once(
                "changed",
                "%s: a replayed handler sent %s where the record has %s; the record wins "
                "(logged once)",
                self.owner,
                command.type,
                row["command"],
            )
            command = _decode(row["command"], command.command_id, command.metadata)
        if row is not None and row["outcome"] in ("accepted", "rejected"):
            return Outcome(row["outcome"], command, row["detail"] or "")
        if row is None and past:
            self.warn_once(
                "new",
                "%s: a replayed handler sent %s for an event handled before; not sent (new "
                "behaviour applies to new events only; logged once)",
                self.owner,
                command.type,
            )
            return Outcome("skipped", command)
        if row is None:
            await self._write(store, command, instance, event, outcome="pending", detail=None)
        return await self.dispatch_recorded(store, command, instance, event)

    async def dispatch_recorded(
        self, store: EventStore, command: Command, instance: str, event: RecordedEvent
    ) -> Outcome:
        """Dispatch a command whose intent is recorded, then record its outcome. Any other
        failure than a rejection leaves the intent pending (resolved on the next attempt)."""
        try:
            result = await self.dispatch(command)
        except CommandRejected as exc:
            await self._write(
                store, command, instance, event, outcome="rejected", detail=exc.reason
            )
            return Outcome("rejected", command, exc.reason)
        ids = ",".join(e.event_id for e in result.events)
        await self._write(store, command, instance, event, outcome="accepted", detail=ids)
        return Outcome("accepted", command, ids)

    def recorded_only(
        self, record: dict[str, dict[str, Any]], sent: set[str], prefix: str, metadata: Any
    ) -> list[Outcome]:
        """Outcomes of recorded commands under ``prefix`` that the replayed handler did not
        send again (the record wins: they were sent)."""
        out = []
        for command_id, row in sorted(record.items()):
            if command_id in sent or not _direct(command_id, prefix):
                continue
            if row["outcome"] not in ("accepted", "rejected"):
                continue
            command = _decode(row["command"], command_id, metadata)
            out.append(Outcome(row["outcome"], command, row["detail"] or ""))
        return out


def _direct(command_id: str, prefix: str) -> bool:
    rest = command_id[len(prefix) :] if command_id.startswith(prefix) else None
    return rest is not None and rest.isdigit()
