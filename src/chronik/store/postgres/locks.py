"""The advisory locks of a PostgreSQL write, as the arrays the SQL takes them from.

Every writer takes its locks in one global order, (class, key text), each key once in its
strongest mode (schema 11, append_v11.py), before its transaction takes an id:

- a stream's key (``tenant/domain/aggregate id``, the schema's stream class), exclusive: the
  writers of one stream, and a unit expecting a stream's version, serialise;
- the DCB keys of the events written (``*``, ``y/<type>``, ``t/<tag>``, the DCB class), shared;
- a condition's keys, exclusive, per item: its tags' keys if it has tags, else its types' keys,
  else ``*`` (dcb.py says why that excludes every writer of an event the item matches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from chronik.messages import AppendResult
from chronik.store.base import AppendRequest, ConditionCheck, WriteUnit

__all__ = ["LOCK_SQL", "LockKey", "Locks", "lock_arrays", "tagged_locks", "unit_locks"]

#: Takes the advisory locks of ``lock_arrays``' (class, key, exclusive) triples, in the order
#: given (schema 11's global order, append_v11.py).
LOCK_SQL: Final = (
    "SELECT CASE WHEN u.x THEN pg_advisory_xact_lock(u.c, hashtext(u.k)) "
    "ELSE pg_advisory_xact_lock_shared(u.c, hashtext(u.k)) END "
    "FROM unnest($1::int[], $2::text[], $3::bool[]) AS u(c, k, x)"
)

#: (class, key, exclusive) of one advisory lock; the arrays of many (LOCK_SQL's arguments)
LockKey = tuple[int, str, bool]
Locks = tuple[list[int], list[str], list[bool]]


def lock_arrays(locks: Iterable[tuple[int, str, bool]]) -> Locks:
    """The (classes, keys, exclusive) arrays of ``locks``: each key once in its strongest mode,
    in the global order every writer takes them in, (class, key text)."""
    strongest: dict[tuple[int, str], bool] = {}
    for c, k, x in locks:
        strongest[c, k] = x or strongest.get((c, k), False)
    order = sorted(strongest)
    return [c for c, _ in order], [k for _, k in order], [strongest[o] for o in order]


def _append_locks(req: AppendRequest, stream_class: int, dcb_class: int) -> Iterator[LockKey]:
    """An append's locks: its stream's key exclusive, its events' DCB keys shared."""
    st = req.stream
    yield stream_class, f"{st.tenant}/{st.domain}/{st.aggregate_id}", True
    yield dcb_class, "*", False
    for e in req.events:
        yield dcb_class, f"y/{e.type}", False
        for tag in e.tags:
            yield dcb_class, f"t/{tag}", False


def _condition_locks(cond: ConditionCheck, dcb_class: int) -> Iterator[LockKey]:
    """A condition's locks, exclusive, per item: its tags' keys if it has tags, else its types'
    keys, else ``*``."""
    for item in cond.query.items:
        if item.tags:
            for tag in item.tags:
                yield dcb_class, f"t/{tag}", True
        elif item.types:
            for t in item.types:
                yield dcb_class, f"y/{t}", True
        else:
            yield dcb_class, "*", True


def unit_locks(
    unit: WriteUnit, resolved: dict[int, AppendResult], stream_class: int, dcb_class: int
) -> Locks:
    """The lock arrays of LOCK_SQL for ``unit``: its streams and the streams it expects
    exclusive, its events' DCB keys shared, its conditions' keys exclusive."""
    locks: list[LockKey] = []
    for i, req in enumerate(unit.appends):
        if i not in resolved:
            locks.extend(_append_locks(req, stream_class, dcb_class))
    for check in unit.expects:
        st = check.stream
        locks.append((stream_class, f"{st.tenant}/{st.domain}/{st.aggregate_id}", True))
    for cond in unit.conditions:
        locks.extend(_condition_locks(cond, dcb_class))
    return lock_arrays(locks)


def tagged_locks(
    requests: Sequence[AppendRequest], cond: ConditionCheck | None, classes: tuple[int, int]
) -> Locks:
    """The lock arrays the tagged append functions take for ``requests`` and ``cond``
    (``classes``: the schema's stream and DCB lock classes)."""
    stream_class, dcb_class = classes
    locks = [k for r in requests for k in _append_locks(r, stream_class, dcb_class)]
    if cond is not None:
        locks.extend(_condition_locks(cond, dcb_class))
    return lock_arrays(locks)
