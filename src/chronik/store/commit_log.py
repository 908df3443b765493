"""What a store object itself committed lately: the positions and event types of its appends.

A projection woken by a commit of its own process asks ``EventStore.committed_types(after)``
before reading: when every event after its position is one this store object appended, the
log answers with their types and the last position, and a projection that handles none of
those types moves its bound there without a read. The log answers only for a gapless run of
positions (SQLite assigns positions in commit order, one after another): an event it did not
note (another process's append, or one written another way) breaks the run, so the log starts
over and the question falls back to the read (None).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

from chronik.messages import AppendResult, Position
from chronik.store.records import WriteUnit

__all__ = ["CommitLog"]

_EMPTY: Final[frozenset[str]] = frozenset()


class CommitLog:
    """Ranges of positions (first, last) with the types of their events, oldest first,
    without a gap between one range and the next. It notes nothing until first asked
    (``types_after``): a store without readers that ask pays nothing."""

    __slots__ = ("_ranges", "asked")

    def __init__(self, size: int = 256) -> None:
        self._ranges: deque[tuple[int, int, frozenset[str]]] = deque(maxlen=size)
        self.asked = False

    def add(self, unit: WriteUnit, results: Sequence[AppendResult]) -> None:
        """Note the events a committed ``unit`` appended (``results``: one per append)."""
        if not self.asked:
            return
        for req, res in zip(unit.appends, results, strict=False):
            positions, events = res.positions, req.events
            count = len(events)
            if not positions or len(positions) != count:
                continue  # nothing new (an idempotent retry), or not known: a gap, if any
            first, last = positions[0], positions[-1]
            if first.index or last.index or last.commit - first.commit + 1 != count:
                self._ranges.clear()
                continue
            self._note(first.commit, last.commit, frozenset(e.type for e in events))

    def _note(self, first: int, last: int, types: frozenset[str]) -> None:
        ranges = self._ranges
        if ranges:
            start, end, known = ranges[-1]
            if end + 1 != first:
                ranges.clear()  # a gap: what lies between was not noted here
            elif types <= known:
                ranges[-1] = (start, last, known)
                return
        ranges.append((first, last, types))

    def clear(self) -> None:
        """Forget every range (positions after them may not be this object's)."""
        self._ranges.clear()

    @property
    def last(self) -> int | None:
        """The last position noted (None: none since the log started over)."""
        return self._ranges[-1][1] if self._ranges else None

    def types_after(self, after: Position) -> tuple[Position, frozenset[str]] | None:
        """(the last position noted, the types of the events after ``after`` up to it) when
        every one of them was noted; None when the log cannot tell."""
        self.asked = True
        ranges = self._ranges
        if not ranges or after.index or after.commit >= ranges[-1][1]:
            return None
        types = _EMPTY
        for first, _last, found in reversed(ranges):
            types = types | found
            if first <= after.commit + 1:
                return Position(ranges[-1][1]), types
        return None
