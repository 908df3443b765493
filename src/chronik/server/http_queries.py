"""Live queries over HTTP: ``GET /v1/queries/{name}``, its filters, paging and row changes.

A ``LiveQuery`` (``queries:`` in chronik.yaml) serves one projection table. Its declared
``params`` filter by equality (``?status=open``), range (``.gt``, ``.gte``, ``.lt``, ``.lte``)
and membership (``.in=open,paid``); values are converted to the column's declared type, and a
bad one is a 400 naming the parameter. ``limit`` (default 100, at most 1000), ``order`` (a
declared parameter or primary-key column, ``-column`` descending) and an opaque ``cursor``
(keyset paging: the answer's ``next_cursor``) shape the page. Everything runs in the database
(``EventStore.read_table``). As SSE the first page is sent as ``event: page``, then each row that
enters or changes in it as ``event: upsert`` and each that leaves it as ``event: delete``.

The id of each SSE message is a resume token: the projection's checkpoints (every partition,
its serving generation) that the page reflects, bound to the query by a digest. A client that
reconnects with it as ``Last-Event-ID`` (``EventSource`` does) gets only what changes after it
if the projection has not moved since; otherwise the rows it missed cannot be told apart from
the rows it has (no per-row history is kept), so it gets the current page with ``"reset":
true`` to replace what it holds. A batch of changes carries the id on its last message only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Final, NamedTuple

import msgspec
from starlette.datastructures import QueryParams

from chronik.errors import UnknownProjection, ValidationError
from chronik.projections import ProjectionRunner, Table, query
from chronik.projections.bookkeeping import STATUS, load_plan
from chronik.projections.lanes import checkpoint_name
from chronik.server import http_params as params
from chronik.store.base import EventStore
from chronik.store.tables import In, Range

__all__ = [
    "LiveQuery",
    "QueryPage",
    "decode_cursor",
    "encode_cursor",
    "event_id",
    "live_changes",
    "parse_page",
    "read_page",
    "resume_from",
    "table_of",
]

DEFAULT_LIMIT: Final = 100
MAX_IN: Final = 100
MAX_ORDER: Final = 4
MAX_TEXT: Final = 1024
_RANGES: Final = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}
_CONTROL: Final = frozenset({"limit", "order", "cursor"})
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_REAL_RE = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?")
_ORDER_RE = re.compile(r"-?[a-z_][a-z0-9_]{0,62}")
_CURSOR_KEY: Final = b"chronik.live-query.cursor.v1"
_EVENT_ID_KEY: Final = b"chronik.live-query.event-id.v1"
MAX_EVENT_ID: Final = 512


class LiveQuery(msgspec.Struct, frozen=True):
    """``GET /v1/queries/{name}?param=...``: rows of one projection table, filtered.

    ``params`` are the columns a client may filter and order by; ``order_by`` the default
    order (``-column`` descending), always completed by the primary key.
    """

    name: str
    projection: str
    table: str
    params: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()


class QueryPage(NamedTuple):
    """What one request asks for: conditions, order (completed by the key), size, keyset."""

    where: dict[str, Any]
    order: tuple[str, ...]
    limit: int
    after: dict[str, Any] | None
    key: tuple[str, ...]


def table_of(spec: LiveQuery, runners: Iterable[ProjectionRunner | None]) -> Table:
    """The declared table a live query serves, from the projections the ``runners`` run (the
    server's own and those the app was given)."""
    known: list[str] = []
    for runner in runners:
        if runner is None:
            continue
        proc = runner.processors.get(spec.projection) or runner.workers.get(spec.projection)
        table = None if proc is None else proc.projection.tables.get(spec.table)
        if table is not None:
            return table
        known += [*runner.processors, *runner.workers]
    raise UnknownProjection(spec.projection, sorted(known))


def _value(name: str, sql_type: str, raw: str) -> Any:
    if sql_type == "INTEGER" and _INT_RE.fullmatch(raw):
        value = int(raw)
        if -(2**63) <= value < 2**63:
            return value
    elif sql_type == "REAL" and _REAL_RE.fullmatch(raw) and math.isfinite(float(raw)):
        return float(raw)
    elif sql_type == "TEXT" and len(raw) <= MAX_TEXT and "\x00" not in raw:
        return raw
    expected = {"INTEGER": "an integer", "REAL": "a number", "TEXT": f"text of <= {MAX_TEXT}"}
    raise ValidationError(
        f"invalid value {raw[:32]!r} for {name}: expected {expected.get(sql_type, 'nothing')}"
        + ("" if sql_type in expected else f" (a {sql_type} column cannot be filtered)"),
        field=name,
    )


def _conditions(spec: LiveQuery, types: Mapping[str, str], q: QueryParams) -> dict[str, Any]:
    where: dict[str, Any] = {}
    ranges: dict[str, dict[str, Any]] = {}
    for name in q:
        if name in _CONTROL:
            continue
        column, _, op = name.partition(".")
        if column not in spec.params or (op and op != "in" and op not in _RANGES):
            allowed = ", ".join(spec.params) or "none"
            raise ValidationError(
                f"unknown query parameter {name[:64]!r} (filters: {allowed}; operators: "
                "gt, gte, lt, lte, in)",
                field=name[:64],
            )
        if len(q.getlist(name)) > 1:
            raise ValidationError(f"{name} is given more than once", field=name)
        if column not in types:
            raise ValidationError(f"{spec.table} has no column {column!r}", field=name)
        raw = q[name]
        if column in where or (column in ranges and op in ("", "in")):
            raise ValidationError(f"conflicting filters on {column}", field=name)
        if not op:
            where[column] = _value(name, types[column], raw)
        elif op == "in":
            items = raw.split(",")
            if len(items) > MAX_IN:
                raise ValidationError(f"{name} takes at most {MAX_IN} values", field=name)
            where[column] = In(_value(name, types[column], v) for v in items)
        else:
            ranges.setdefault(column, {})[_RANGES[op]] = _value(name, types[column], raw)
    return where | {c: Range(**bounds) for c, bounds in ranges.items()}


def _order(spec: LiveQuery, table: Table, types: Mapping[str, str], raw: str | None) -> list[str]:
    allowed = {*spec.params, *table.primary_key, *(c.lstrip("-") for c in spec.order_by)}
    items = raw.split(",") if raw is not None else list(spec.order_by)
    seen: set[str] = set()
    for item in items:
        column = item.removeprefix("-")
        if (
            len(items) > MAX_ORDER
            or not _ORDER_RE.fullmatch(item)
            or column not in allowed
            or types.get(column) not in ("INTEGER", "REAL", "TEXT")
            or column in seen
        ):
            raise ValidationError(
                f"invalid order {(raw or '')[:64]!r}: up to {MAX_ORDER} of "
                f"{sorted(allowed)}, each once, -column for descending",
                field="order",
            )
        seen.add(column)
    return items + [c for c in table.primary_key if c not in seen]


def _digest(payload: bytes, key: bytes = _CURSOR_KEY) -> bytes:
    return hashlib.blake2b(payload, key=key, digest_size=12).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_cursor(order: tuple[str, ...], row: Mapping[str, Any]) -> str:
    """The opaque cursor continuing after ``row`` in ``order`` (a keyset, not a secret)."""
    payload = json.dumps([list(order), [row[c.lstrip("-")] for c in order]]).encode()
    return f"{_b64(payload)}.{_b64(_digest(payload))}"


def decode_cursor(text: str, order: tuple[str, ...], types: Mapping[str, str]) -> dict[str, Any]:
    """The keyset of a cursor made by ``encode_cursor`` for ``order``; a cursor that was
    changed, or made for another order, is a 400 naming ``cursor``."""
    try:
        body, mac = text.split(".")
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)) != _digest(payload):
            raise ValueError("digest")
        made_for, values = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise ValidationError("invalid cursor", field="cursor") from exc
    if made_for != list(order) or not isinstance(values, list) or len(values) != len(order):
        raise ValidationError("the cursor belongs to another order", field="cursor")
    allowed = {"INTEGER": (int,), "REAL": (float, int), "TEXT": (str,)}
    for column, value in zip(order, values, strict=True):
        kinds = allowed.get(types[column.lstrip("-")], ())
        if value is not None and (type(value) not in kinds):
            raise ValidationError("invalid cursor", field="cursor")
    return {c.lstrip("-"): v for c, v in zip(order, values, strict=True)}


def parse_page(spec: LiveQuery, table: Table, q: QueryParams) -> QueryPage:
    """The page a request asks for (ValidationError naming the parameter on bad input)."""
    types = dict(table.columns)
    where = _conditions(spec, types, q)
    order = tuple(_order(spec, table, types, q.get("order")))
    limit = params.limit(q, DEFAULT_LIMIT)
    cursor = q.get("cursor")
    after = None if cursor is None else decode_cursor(cursor, order, types)
    return QueryPage(where, order, limit, after, table.primary_key)


async def read_page(
    store: EventStore, spec: LiveQuery, page: QueryPage
) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of the page and the cursor of the next one (None: this is the last)."""
    rows = await query(
        store, spec.projection, spec.table, page.where, page.order, page.limit + 1,
        after=page.after,
    )  # fmt: skip
    if len(rows) <= page.limit:
        return rows, None
    del rows[page.limit :]
    return rows, encode_cursor(page.order, rows[-1])


async def checkpoint(store: EventStore, projection: str) -> str:
    """What the projection's tables reflect: the committed checkpoint of each partition of
    its serving generation (``-`` for none yet) and that generation, e.g. ``42.g1``; the
    tables do not change while it stays the same."""
    plan = await load_plan(store, projection)
    if plan is not None:
        generation, partitions = plan.generation, plan.partitions
    else:
        rows = await store.read_table(STATUS.name, {"name": projection}, limit=1)
        generation, partitions = (rows[0]["generation"] if rows else 1), 1
    name = checkpoint_name(projection, generation)
    found = [await store.load_checkpoint(name, k) for k in range(partitions)]
    marks = ",".join("-" if c is None else str(c.position) for c in found)
    return f"{marks}.g{generation}"


def _bound(spec: LiveQuery, page: QueryPage, version: str) -> bytes:
    after = None if page.after is None else sorted(page.after.items())
    shape = repr((sorted(page.where.items()), page.order, page.limit, after))
    return _digest(
        f"{spec.name}\n{spec.projection}\n{spec.table}\n{shape}\n{version}".encode(),
        _EVENT_ID_KEY,
    )


def event_id(spec: LiveQuery, page: QueryPage, version: str) -> str:
    """The SSE id of a message reflecting ``version`` (see ``checkpoint``) of this query."""
    return f"{version}.{_b64(_bound(spec, page, version))}"


def resume_from(spec: LiveQuery, page: QueryPage, last_event_id: str) -> str:
    """The version a ``Last-Event-ID`` made by ``event_id`` for this query names; a changed
    one, one of another query or not ours is a 400 naming ``Last-Event-ID``."""
    version, _, mac = last_event_id.rpartition(".")
    valid = len(last_event_id) <= MAX_EVENT_ID and bool(version) and last_event_id.isascii()
    try:
        digest = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    except ValueError:
        valid = False
    if not valid or digest != _bound(spec, page, version):
        raise ValidationError(
            "invalid Last-Event-ID: not an id this query sent (ids are per query and filters)",
            field="Last-Event-ID",
        )
    return version


def _event(kind: str, data: object, token: str | None = None) -> bytes:
    head = f"id: {token}\n" if token is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def live_changes(
    store: EventStore,
    spec: LiveQuery,
    page: QueryPage,
    poll: float,
    keepalive: float,
    last_event_id: str | None = None,
) -> AsyncIterator[bytes]:
    """The SSE of a live query: ``page``, then ``upsert`` / ``delete`` as rows enter, change
    in or leave the page (found by comparing it by primary key whenever the projection's
    checkpoint moves, checked every ``poll`` seconds, so states between two checks may be
    coalesced); memory is bounded by the page's limit. ``last_event_id`` (a reconnect) is
    checked here, before the response starts: a bad one raises ValidationError."""
    resume = resume_from(spec, page, last_event_id) if last_event_id else None
    return _changes(store, spec, page, poll, keepalive, resume)


async def _changes(
    store: EventStore,
    spec: LiveQuery,
    page: QueryPage,
    poll: float,
    keepalive: float,
    resume: str | None,
) -> AsyncIterator[bytes]:
    # Each id is read BEFORE the page it labels: the page reflects that version or a later
    # one, so a client resuming with it while the version is unchanged holds the current page.
    seen = await checkpoint(store, spec.projection)
    rows, next_cursor = await read_page(store, spec, page)
    if resume is None or resume != seen or await checkpoint(store, spec.projection) != seen:
        body = {"rows": rows, "next_cursor": next_cursor, "reset": resume is not None}
        yield _event("page", body, event_id(spec, page, seen))

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {tuple(r[c] for c in page.key): r for r in rows}

    last, quiet = keyed(rows), 0.0
    while True:
        await asyncio.sleep(poll)
        quiet += poll
        version = await checkpoint(store, spec.projection)
        if version == seen:
            if quiet >= keepalive:
                quiet = 0.0
                yield b": keepalive\n\n"
            continue
        current = keyed((await read_page(store, spec, page))[0])
        messages = [
            ("delete", dict(zip(page.key, k, strict=True))) for k in last if k not in current
        ]
        messages += [("upsert", r) for k, r in current.items() if last.get(k) != r]
        token = event_id(spec, page, version)
        if not messages:  # the projection moved, not this page: only the id (no event)
            yield f"id: {token}\n\n".encode()
        else:  # one write; the id on the last message: a cut batch resumes before it
            yield b"".join(
                _event(kind, data, token if i == len(messages) - 1 else None)
                for i, (kind, data) in enumerate(messages)
            )
        last, seen, quiet = current, version, 0.0
