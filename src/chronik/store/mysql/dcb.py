"""DCB on MySQL: a condition's first match and query pages, as SQL.

Tag items go through the ``event_tags`` primary key ``(tag, position)`` (written in the event's
transaction), so a tag query costs what it matches; an item's further tags are probes of the
same key, its types a filter on the event. Tag-less items scan ``events`` by ``(type,
position)`` or by position.

Serialising overlapping conditions needs no lock of its own here: a unit with conditions checks
them after it has taken the position counter's row lock (``write``), which every writer of
events holds from its position assignment to its commit. While the check runs no other event
can be written, and every event written before has committed: the check sees exactly the
events that precede the unit's own, so two overlapping conditional appends can never both pass
(the second one's check sees the first one's events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chronik.dcb import Query, QueryItem
from chronik.messages import Position

__all__ = ["first_match_sql", "query_page_sql"]


def _in(values: Sequence[str], args: list[Any]) -> str:
    args.extend(values)
    return "(" + ", ".join(["%s"] * len(values)) + ")"


def _item_sql(
    item: QueryItem, args: list[Any], bound: tuple[str, int] | None, order: str, limit: int
) -> str:
    """The positions of the events ``item`` matches past ``bound`` (op, position), in
    ``order``, at most ``limit``."""
    where: list[str] = []
    if item.tags:
        args.append(item.tags[0])
        where.append("k.tag = %s")
        source = "event_tags k"
        if item.types:
            source += " JOIN events e ON e.`position` = k.`position`"
    else:
        source = "events k"
    if bound is not None:
        op, pos = bound
        args.append(pos)
        where.append(f"k.`position` {op} %s")
    for tag in item.tags[1:]:
        args.append(tag)
        where.append(
            "EXISTS (SELECT 1 FROM event_tags k2 WHERE k2.tag = %s "
            "AND k2.`position` = k.`position`)"
        )
    if item.types:
        where.append(f"{'e' if item.tags else 'k'}.`type` IN {_in(item.types, args)}")
    cond = " AND ".join(where) if where else "TRUE"
    return (
        f"SELECT k.`position` FROM {source} WHERE {cond} "
        f"ORDER BY k.`position` {order} LIMIT {int(limit)}"
    )


def first_match_sql(query: Query, after: Position | None) -> tuple[str, list[Any]]:
    """(item, position) of the first event after ``after`` (any when None) that ``query``
    matches, the lowest item it matches on a tie; no row when there is none."""
    args: list[Any] = []
    bound = None if after is None else (">", after.commit)
    parts = [
        f"SELECT {n} AS item, ({_item_sql(item, args, bound, 'ASC', 1)}) AS pos"
        for n, item in enumerate(query.items)
    ]
    sql = (
        f"SELECT m.item, m.pos FROM ({' UNION ALL '.join(parts)}) AS m "
        "WHERE m.pos IS NOT NULL ORDER BY m.pos, m.item LIMIT 1"
    )
    return sql, args


def query_page_sql(
    cols: str, query: Query, cursor: Position | None, limit: int, backward: bool
) -> tuple[str, list[Any]]:
    """Up to ``limit`` events (``cols`` of ``events e`` and ``streams s``) that ``query``
    matches after ``cursor`` (before it, newest first, with ``backward``)."""
    args: list[Any] = []
    order = "DESC" if backward else "ASC"
    bound = None if cursor is None else ("<" if backward else ">", cursor.commit)
    parts = [_item_sql(item, args, bound, order, limit) for item in query.items]
    keys = parts[0] if len(parts) == 1 else " UNION ".join(f"({p})" for p in parts)
    sql = (
        f"SELECT {cols} FROM ({keys}) AS p "
        "JOIN events e ON e.`position` = p.`position` "
        "JOIN streams s ON s.id = e.stream_id "
        f"ORDER BY e.`position` {order} LIMIT {int(limit)}"
    )
    return sql, args
