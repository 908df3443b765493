"""DCB on LMDB: position scans over the log and the tag and type indexes, query items, and the
checks a unit passes before it writes.

Every index key is a prefix (a tag, a type) followed by a big-endian position, so a cursor walks
one tag's or one type's events in position order. An item with tags walks its first tag and
probes the index for its other tags and its types (one B-tree lookup each), so it costs what it
matches, not the length of the log; an item with types only merges its types' walks; an item
with neither walks the log.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Final

import lmdb

from chronik.dcb import Query, QueryItem
from chronik.errors import AppendConditionFailed, WrongExpectedVersion
from chronik.messages import Position
from chronik.store.lmdb.keys import (
    Dbs,
    Txn,
    num,
    stream_key,
    tag_key,
    type_key,
    unnum,
    unpack_stream,
)
from chronik.store.records import WriteUnit, check_expected, is_retry

__all__ = ["check_unit", "first_match", "item_positions", "query_positions", "scan"]

_TOP: Final = num(2**64 - 1)


def scan(
    txn: Txn, db: lmdb._Database, prefix: bytes, lo: int | None, hi: int | None, backward: bool
) -> Iterator[int]:
    """The positions p, ``lo`` < p < ``hi``, of the keys ``prefix + num(p)`` of ``db``,
    ascending (descending with ``backward``)."""
    cur = txn.cursor(db=db)
    n = len(prefix)
    if not backward:
        if not cur.set_range(prefix + num(0 if lo is None else lo + 1)):
            return
        for key in cur.iternext(keys=True, values=False):
            if key[:n] != prefix:
                return
            p = unnum(key, n)
            if hi is not None and p >= hi:
                return
            yield p
        return
    found = cur.set_range(prefix + (_TOP if hi is None else num(hi)))
    if not (cur.prev() if found else cur.last()):
        return
    for key in cur.iterprev(keys=True, values=False):
        if key[:n] != prefix:
            return
        p = unnum(key, n)
        if lo is not None and p <= lo:
            return
        yield p


def item_positions(
    txn: Txn, dbs: Dbs, item: QueryItem, lo: int | None, hi: int | None, backward: bool
) -> Iterator[int]:
    """The positions of the events ``item`` matches in (``lo``, ``hi``), in position order."""
    if item.tags:
        tags, types = dbs["tags"], dbs["types"]
        first, *others = item.tags
        probes = [tag_key(t) for t in others]
        type_probes = [type_key(t) for t in item.types]
        for p in scan(txn, tags, tag_key(first), lo, hi, backward):
            pk = num(p)
            if all(txn.get(k + pk, db=tags) is not None for k in probes) and (
                not type_probes or any(txn.get(k + pk, db=types) is not None for k in type_probes)
            ):
                yield p
    elif item.types:
        walks = [scan(txn, dbs["types"], type_key(t), lo, hi, backward) for t in item.types]
        yield from walks[0] if len(walks) == 1 else heapq.merge(*walks, reverse=backward)
    else:
        yield from scan(txn, dbs["log"], b"", lo, hi, backward)


def query_positions(
    txn: Txn, dbs: Dbs, query: Query, lo: int | None, hi: int | None, limit: int, backward: bool
) -> list[int]:
    """The first ``limit`` positions ``query`` matches in (``lo``, ``hi``), in order."""
    found: set[int] = set()
    for item in query.items:  # each item's first ``limit`` matches; the union's first count
        found.update(itertools.islice(item_positions(txn, dbs, item, lo, hi, backward), limit))
    return sorted(found, reverse=backward)[:limit]


def first_match(txn: Txn, dbs: Dbs, query: Query, after: Position | None) -> tuple[int, int] | None:
    """The index of the first item and the position of the first event after ``after`` that
    ``query`` matches; None when there is none."""
    lo = None if after is None else after.commit
    best: tuple[int, int] | None = None  # (item, position)
    for n, item in enumerate(query.items):
        # a later item only counts with an earlier event: bound it by the best so far
        hi = None if best is None else best[1]
        p = next(item_positions(txn, dbs, item, lo, hi, False), None)
        if p is not None:
            best = (n, p)
    return best


def check_unit(txn: Txn, dbs: Dbs, unit: WriteUnit) -> None:
    """Raise WrongExpectedVersion or AppendConditionFailed if a check of ``unit`` fails against
    the store as it is before the unit's appends; a check whose events are all stored already
    (a retry of a committed unit) is skipped."""
    ids = dbs["event_ids"]

    def stored(event_id: str) -> bool:
        return txn.get(event_id.encode(), db=ids) is not None

    for check in unit.expects:
        if not is_retry(check.event_ids, stored):
            raw = txn.get(stream_key(check.stream), db=dbs["streams"])
            actual: int | None = None if raw is None else unpack_stream(raw)[1]
            if not check_expected(check.expected, actual):
                raise WrongExpectedVersion(check.stream, check.expected, actual)
    for cond in unit.conditions:
        if not is_retry(cond.event_ids, stored):
            found = first_match(txn, dbs, cond.query, cond.after)
            if found is not None:
                raise AppendConditionFailed(found[0], Position(found[1]), str(cond.query))
