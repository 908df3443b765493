"""Given / when / then for sagas, like Axon's SagaTestFixture, with a manual clock.

    saga_fixture(payment, registry=registry).given().when(
        OrderPlaced("o-1"), stream=StreamId("order", "o-1")
    ).then_scheduled("unpaid").then_no_commands().after(16 * 60).then_commands(
        [Command(domain="order", aggregate_id="o-1", type="Cancel", payload={...})]
    ).then_ended()

The saga runs as in production (``Saga.projection`` on a real processor over a memory store,
its decisions recorded, its deadlines rows of its table, fired by a real
``DeadlineScheduler``); only the command bus is replaced: commands are collected (and accepted,
or rejected with ``rejecting(type, reason)`` to exercise ``on_rejected``). Each ``then_*``
checks what the last step (``when`` or ``after``) did; ``given`` only sets the scene.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import msgspec

from chronik.codec import EventRegistry
from chronik.commands import CommandResult
from chronik.deadlines import DeadlineScheduler, ManualClock
from chronik.errors import ChronikError, CommandRejected
from chronik.messages import Command, StreamId
from chronik.projections import query
from chronik.sagas import Saga
from chronik.testing.projections import DEFAULT_STREAM, _Harness

__all__ = ["SagaFixture", "saga_fixture"]


def saga_fixture(
    saga: Saga[Any], *, registry: EventRegistry | None = None, clock: ManualClock | None = None
) -> SagaFixture:
    """A fixture that runs ``saga`` on the events given to it, with a manual clock."""
    return SagaFixture(saga, registry=registry, clock=clock)


def _shape(command: Command) -> tuple[Any, ...]:
    payload = msgspec.to_builtins(command.payload)
    return (command.domain, command.aggregate_id, command.tenant, command.type, payload)


class SagaFixture:
    """One saga over a memory store: steps (``given``, ``when``, ``after``) and checks."""

    def __init__(
        self,
        saga: Saga[Any],
        *,
        registry: EventRegistry | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.saga = saga
        self.clock = clock if clock is not None else ManualClock()
        #: every command the saga sent, in order (``commands``: those of the last step)
        self.sent: list[Command] = []
        self._rejections: dict[str, str] = {}
        self._harness = _Harness(registry)
        self._harness.add(saga.projection(self._dispatch, clock=self.clock))
        self._scheduler = DeadlineScheduler(
            self._harness.store, [saga], aggregates=False, clock=self.clock, owner="fixture"
        )
        self._mark = 0
        self._before: dict[tuple[str, str], int] = {}
        self._fired: set[tuple[str, str]] = set()

    async def _dispatch(self, command: Command) -> CommandResult:
        self.sent.append(command)
        reason = self._rejections.get(command.type)
        if reason is not None:
            raise CommandRejected(reason)
        stream = StreamId(command.domain, command.aggregate_id, command.tenant)
        return CommandResult(command.command_id or "", stream, [], None)

    # --- steps --------------------------------------------------------------------------------

    def rejecting(self, command_type: str, reason: str) -> Self:
        """Reject every later command of ``command_type`` with ``reason``."""
        self._rejections[command_type] = reason
        return self

    def given(self, *events: Any, stream: StreamId | tuple[str, str] = DEFAULT_STREAM) -> Self:
        """Events the saga has already handled (EventData, or registered instances)."""
        self._append(events, stream)
        self._mark = len(self.sent)
        return self

    def when(self, *events: Any, stream: StreamId | tuple[str, str] = DEFAULT_STREAM) -> Self:
        """The events under test; the ``then_*`` checks look at what they caused."""
        self._begin()
        self._append(events, stream)
        return self

    def _append(self, events: tuple[Any, ...], stream: StreamId | tuple[str, str]) -> None:
        recorded = self._harness.run(self._harness.append(events, stream))
        # the store records events by the wall clock: the manual clock never lags behind it,
        # so after(s) means s seconds after the last events given
        self.clock.value = max(self.clock.value, recorded)

    def after(self, seconds: float) -> Self:
        """Move the clock ``seconds`` on (from the last events given, at the latest) and fire
        the deadlines then due: the step under test."""
        self._begin()
        self.clock.advance(seconds)
        now = self.clock.now_us()
        self._fired = {key for key, due in self._before.items() if due <= now}
        self._harness.run(self._fire())
        return self

    async def _fire(self) -> None:
        await self._harness.store.open()
        await self._scheduler.fire_due()
        await self._harness.settle()

    def _begin(self) -> None:
        self._mark = len(self.sent)
        self._before = self.deadlines()
        self._fired = set()

    # --- what the saga holds ------------------------------------------------------------------

    @property
    def commands(self) -> list[Command]:
        """The commands the last step sent."""
        return self.sent[self._mark :]

    def deadlines(self) -> dict[tuple[str, str], int]:
        """The pending deadlines: (instance id, name) -> due time (microseconds)."""
        rows = self._rows(self.saga.deadline_table)
        return {(r["instance_id"], r["name"]): r["due_us"] for r in rows}

    def state(self, instance: str | None = None) -> Any:
        """The state of ``instance`` (or of the only instance)."""
        row = self._instance(instance)
        return msgspec.json.decode(row["state"], type=self.saga.state_type)

    def _rows(self, table: str) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            await self._harness.store.open()
            try:
                return await query(self._harness.store, self.saga.name, table)
            except ChronikError:  # the saga has not run yet: no table
                return []

        return self._harness.run(read())

    def _instance(self, instance: str | None) -> dict[str, Any]:
        rows = self._rows(self.saga.instances.name)
        if instance is not None:
            rows = [r for r in rows if r["instance_id"] == instance]
        if len(rows) != 1:
            found = [r["instance_id"] for r in self._rows(self.saga.instances.name)]
            wanted = repr(instance) if instance is not None else "one instance (pass instance=)"
            raise AssertionError(f"expected {wanted}, the saga has {found}")
        return rows[0]

    # --- checks -------------------------------------------------------------------------------

    def then_commands(self, expected: Iterable[Command]) -> Self:
        """Assert the last step sent exactly these commands, in order (compared by domain,
        aggregate id, tenant, type and payload; ids and metadata are the saga's)."""
        got = [_shape(c) for c in self.commands]
        want = [_shape(c) for c in expected]
        if got != want:
            raise AssertionError(f"expected commands {want}, got {got}")
        return self

    def then_no_commands(self) -> Self:
        """Assert the last step sent no command."""
        return self.then_commands([])

    def then_scheduled(self, name: str, instance: str | None = None) -> Self:
        """Assert deadline ``name`` is pending (for ``instance``, if given)."""
        pending = self.deadlines()
        if not any(n == name and instance in (None, i) for i, n in pending):
            raise AssertionError(f"expected deadline {name!r} pending, got {sorted(pending)}")
        return self

    def then_cancelled(self, name: str, instance: str | None = None) -> Self:
        """Assert deadline ``name`` was pending before the last step and is gone without
        having fired."""
        now = self.deadlines()
        gone = [
            key
            for key in self._before
            if key[1] == name and instance in (None, key[0]) and key not in now
        ]
        if not gone or any(key in self._fired for key in gone):
            raise AssertionError(
                f"expected deadline {name!r} cancelled; before {sorted(self._before)}, "
                f"now {sorted(now)}"
            )
        return self

    def then_ended(self, instance: str | None = None) -> Self:
        """Assert ``instance`` (or the only instance) has ended."""
        row = self._instance(instance)
        if not row["ended"]:
            raise AssertionError(f"expected {row['instance_id']!r} ended; it is running")
        return self
