"""Positions of a ``GroupStore``: a cut across its members, as one ``Position``.

A group has no global order of its own: each member keeps its order and no order exists
between members. So a group position is a *cut* (as Axon's multi-source tracking token): for
each member, the last of its positions at or before the cut (None: none of its events), plus
which member's event the cut was taken at (``at``, -1 for none). Reading *after* a cut reads
each member after its entry; reading *before* it reads, for the member ``at``, before its
entry and for the others up to and including theirs, so an event is always either before its
own position, at it, or after it.

The cut is written into a ``Position`` as ``commit = sum of the members' commits`` and
``index = (sum of their indexes) << 24 | a 24-bit digest of the entries``: along one reader's
delivery (forward or backward) positions are strictly ordered, and the same entries give the
same position in every process (``at`` is not part of it: a projection that has read up to
the head is at the head's position). The digest is not reversible: ``CutBook`` remembers the
cuts of positions it handed out (bounded), and checkpoints carry theirs as one checkpoint per
member.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final, NamedTuple

from chronik.errors import ValidationError
from chronik.messages import Position

__all__ = ["START", "Cut", "CutBook", "after_bounds", "before_bounds"]

_DIGEST_BITS: Final = 24
_REMEMBERED: Final = 65536


class Cut(NamedTuple):
    """Each member's last position at or before the cut (None: none), and the member it was
    taken at (-1: none)."""

    entries: tuple[Position | None, ...]
    at: int = -1

    def position(self) -> Position:
        """The cut as a Position (see the module docstring)."""
        commit = sum(p.commit for p in self.entries if p is not None)
        index = sum(p.index for p in self.entries if p is not None)
        text = ";".join("-" if p is None else f"{p.commit}:{p.index}" for p in self.entries)
        digest = hashlib.blake2b(text.encode(), digest_size=3).digest()
        return Position(commit, (index << _DIGEST_BITS) | int.from_bytes(digest))

    def moved(self, member: int, position: Position | None, at: int) -> Cut:
        """This cut with ``member`` 's entry set to ``position``, taken at ``at``."""
        entries = list(self.entries)
        entries[member] = position
        return Cut(tuple(entries), at)


#: The start of a group's log: no member's event is at or before it.
START: Final = Position(0)


class CutBook:
    """The cuts of the positions a group handed out (the newest ``_REMEMBERED``)."""

    def __init__(self, members: int) -> None:
        self.members = members
        self._cuts: OrderedDict[Position, Cut] = OrderedDict()

    def start(self) -> Cut:
        """The cut before every event."""
        return Cut((None,) * self.members)

    def remember(self, cut: Cut, keep: bool = False) -> Position:
        """The cut's position, remembered; ``keep``: a cut of the same entries remembered
        before (taken at an event) stays."""
        position = cut.position()
        if not keep or position not in self._cuts:
            self._cuts[position] = cut
        self._cuts.move_to_end(position)
        if len(self._cuts) > _REMEMBERED:
            self._cuts.popitem(last=False)
        return position

    def cut(self, position: Position | None, field: str) -> Cut:
        """The cut of a position this group handed out (None or START: the start);
        ValidationError naming ``field`` for one it does not know."""
        if position is None or position == START:
            return self.start()
        if not isinstance(position, Position):
            raise ValidationError(f"expected a Position, got {position!r}", field=field)
        found = self._cuts.get(position)
        if found is None:
            raise ValidationError(
                f"{field} {position} is not a position of this group (a group position is "
                "known to the process that read it; resume a projection from its checkpoint)",
                field=field,
            )
        self._cuts.move_to_end(position)
        return found

    def restore(self, entries: tuple[Position | None, ...]) -> Position:
        """The position of a checkpoint whose members' entries were stored."""
        return self.remember(Cut(entries), keep=True)


def after_bounds(cut: Cut) -> list[Position | None]:
    """Each member's exclusive lower bound for reading after ``cut``."""
    return list(cut.entries)


def before_bounds(cut: Cut) -> list[Position | bool | None]:
    """Each member's exclusive upper bound for reading before ``cut``; False: nothing of that
    member is before it."""
    out: list[Position | bool | None] = []
    for member, p in enumerate(cut.entries):
        if p is None:
            out.append(False)
        elif member == cut.at:
            out.append(p)
        elif p.index == 0:  # stores that order by commit alone (SQLite, memory): c + 1
            out.append(Position(p.commit + 1))
        else:  # up to and including p: nothing lies between (c, i) and (c, i + 1)
            out.append(Position(p.commit, p.index + 1))
    return out
