"""The fault proxy: make an event store raise any exception at a chosen step of a write or read.

Every adapter calls ``EventStore.fault_hook`` (when set) at the named steps of its write and
read paths; ``inject`` installs a ``FaultInjector`` there. A fault names a step, the exception
to raise (an instance, a class, or a factory) and optionally which unit of work it hits::

    from chronik.testing.faults import inject, touches

    with inject(store) as faults:
        faults.fail("commit", OverflowError("boom"))                  # the next commit
        faults.fail("append", MemoryError, where=touches(stream))     # that unit only
        faults.fail("fetch", sqlite_error(), skip=2)                  # the third read
        ...
    faults.fired  # [(step, unit or None, fault), ...] in order

Steps (``STEPS``): ``begin`` (a transaction starts: SQLite's is one per group-commit batch,
so its hook gets no unit), ``lock`` (PostgreSQL locks the unit's streams), ``checkpoint``,
``tables``, ``snapshot``, ``append`` (each append of the unit), ``commit`` (just before the
commit; SQLite: batch-wide) and ``fetch`` (each read). A fault that ``pause``s runs a callable
instead of raising (e.g. to freeze a process inside a transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from chronik.messages import StreamId
from chronik.store.base import EventStore, WriteUnit

__all__ = [
    "STEPS",
    "WRITE_STEPS",
    "Fault",
    "FaultInjector",
    "inject",
    "postgres_connection_lost",
    "sqlite_error",
    "touches",
    "writes_table",
]

WRITE_STEPS: Final = ("begin", "lock", "checkpoint", "tables", "snapshot", "append", "commit")
STEPS: Final = (*WRITE_STEPS, "fetch")

ErrorSpec = BaseException | type[BaseException] | Callable[[], BaseException]
UnitFilter = Callable[[WriteUnit], bool]


@dataclass
class Fault:
    """Raise ``error`` at ``step`` (for units ``where`` accepts), after ``skip`` matching
    occurrences, ``times`` times (None: every time); or run ``action`` instead of raising."""

    step: str
    error: ErrorSpec | None = None
    where: UnitFilter | None = None
    skip: int = 0
    times: int | None = 1
    action: Callable[[], None] | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, step: str, unit: WriteUnit | None) -> bool:
        """Whether this fault fires now (counts the occurrence)."""
        if step != self.step:
            return False
        if self.where is not None and (unit is None or not self.where(unit)):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True

    def make_error(self) -> BaseException:
        """A fresh exception to raise (a class or a factory is called each time)."""
        error = self.error
        if isinstance(error, BaseException):
            return error
        assert error is not None
        return error()


@dataclass
class FaultInjector:
    """The hook ``inject`` installs: raises the faults added to it at their steps."""

    store: EventStore
    faults: list[Fault] = field(default_factory=list)
    fired: list[tuple[str, WriteUnit | None, Fault]] = field(default_factory=list)
    steps: dict[str, int] = field(default_factory=dict)

    def fail(
        self,
        step: str,
        error: ErrorSpec,
        *,
        where: UnitFilter | None = None,
        skip: int = 0,
        times: int | None = 1,
    ) -> Fault:
        """Raise ``error`` at ``step`` (see Fault)."""
        return self.add(Fault(_check_step(step), error, where, skip, times))

    def pause(
        self, step: str, action: Callable[[], None], *, where: UnitFilter | None = None
    ) -> Fault:
        """Run ``action`` at ``step`` once (it may block, e.g. to be frozen by a signal)."""
        return self.add(Fault(_check_step(step), None, where, 0, 1, action))

    def add(self, fault: Fault) -> Fault:
        """Add a fault; it fires from the next matching step on."""
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault (the record of those that fired stays)."""
        self.faults.clear()

    def __call__(self, step: str, unit: WriteUnit | None) -> None:
        self.steps[step] = self.steps.get(step, 0) + 1
        for fault in self.faults:
            if fault.matches(step, unit):
                self.fired.append((step, unit, fault))
                if fault.action is not None:
                    fault.action()
                    return
                raise fault.make_error()

    def install(self) -> FaultInjector:
        """Set this injector as the store's fault hook."""
        self.store.fault_hook = self
        return self

    def uninstall(self) -> None:
        """Remove the hook (if it is still this injector)."""
        if self.store.fault_hook is self:
            self.store.fault_hook = None

    def __enter__(self) -> FaultInjector:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def inject(store: EventStore) -> FaultInjector:
    """A FaultInjector for ``store``; use it as a context manager (or call ``install``)."""
    return FaultInjector(store)


def _check_step(step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    return step


def touches(stream: StreamId) -> UnitFilter:
    """A unit filter: units that append to ``stream``."""
    return lambda unit: any(r.stream == stream for r in unit.appends)


def writes_table(table: str) -> UnitFilter:
    """A unit filter: units that write to read-model table ``table``."""
    return lambda unit: any(w.table == table for w in unit.tables)


def sqlite_error(
    code: int = sqlite3.SQLITE_FULL, message: str = "database or disk is full"
) -> sqlite3.OperationalError:
    """A sqlite3 error as the driver raises it (``sqlite_errorcode`` set; disk full by default)."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = {sqlite3.SQLITE_FULL: "SQLITE_FULL"}.get(code, f"SQLITE_{code}")
    return error


def postgres_connection_lost() -> BaseException:
    """The asyncpg error of a connection that went away (needs ``chronik[postgres]``)."""
    import asyncpg

    error: BaseException = asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    )
    return error
