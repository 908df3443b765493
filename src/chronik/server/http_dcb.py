"""HTTP handlers of dynamic consistency boundaries (DCB): ``POST /v1/dcb/read`` and
``POST /v1/dcb/append``.

Both take a JSON body checked at the edge (the value rule, then its shape): a refusal is 400
naming the field (``query.items[0].tags``, ``events[1].type``, ``condition.after``). The
append writes events with no business logic in between, so it is refused (403) unless the
server enables it (``create_http_app(raw_append=True)``, config ``http.raw_append: true``);
with auth it also needs the ``append`` right, and its events are checked against the
registered schemas. A failed append condition is 409 ``AppendConditionFailed`` with the query
``item`` and the ``position`` of the first matching event; nothing is written then. Both stay
within the request's tenant scope (``chronik.server.tenancy``): reads see its tenant's events,
appends go to its tenant (another tenant is 403).
Module-level handlers over ``chronik.server.http_state.HttpState``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chronik.dcb import AppendCondition, Query
from chronik.errors import PermissionDenied
from chronik.messages import EventData, Position
from chronik.server import http_params as params
from chronik.server.edge_input import check_raw_events, query_of
from chronik.server.http_state import read_body, scope_of, state_of
from chronik.server.tenancy import read_query

__all__ = ["RAW_APPEND_OFF", "dcb_append", "dcb_read"]

RAW_APPEND_OFF: Final = (
    "raw appends are disabled: POST /v1/dcb/append bypasses the business logic; enable it with "
    "`http.raw_append: true` in the config (create_http_app(..., raw_append=True))"
)
B = TypeVar("B")
Limit = Annotated[int, msgspec.Meta(ge=1, le=params.MAX_LIMIT)]


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    types: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)


class _Query(msgspec.Struct, forbid_unknown_fields=True):
    items: list[_Item]


class _ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    query: _Query
    after: str | None = None
    limit: Limit = 100
    backward: bool = False


class _Event(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    payload: Any
    tags: list[str] = msgspec.field(default_factory=list)
    event_id: str | None = None
    metadata: dict[str, str] | None = None
    schema_version: int = 1


class _Condition(msgspec.Struct, forbid_unknown_fields=True):
    fail_if_events_match: _Query
    after: str | None = None


class _AppendBody(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Event]
    condition: _Condition | None = None
    domain: str = "dcb"
    tenant: str = ""


async def _body(request: Request, shape: type[B]) -> B:
    data = await read_body(request)
    if len(data) > params.OFF_LOOP_BYTES:
        return await asyncio.to_thread(params.convert_body, data, shape)
    return params.convert_body(data, shape)


def _query(query: _Query, field: str) -> Query:
    return query_of([(i.types, i.tags) for i in query.items], field)


async def dcb_read(request: Request) -> Response:
    """``POST /v1/dcb/read``: the events a query matches, in the global order (newest first
    with ``backward``), after ``after`` (before it, backward), at most ``limit``; and the
    position of the last one (``last_position``, a safe condition ``after``)."""
    body = await _body(request, _ReadBody)
    query = _query(body.query, "query")
    after = None if body.after is None else Position.parse(body.after, "after")
    store, scope = state_of(request).store, scope_of(request)
    events = [e async for e in read_query(store, scope, query, after, body.limit, body.backward)]
    last = str(events[-1].position) if events else None
    return JSONResponse({"events": [e.to_dict() for e in events], "last_position": last})


async def dcb_append(request: Request) -> Response:
    """``POST /v1/dcb/append``: tagged events appended atomically unless the condition fails
    (409 AppendConditionFailed, nothing written); the same events again (same ids) answer the
    original positions."""
    state = state_of(request)
    if not state.raw_append:  # the append right was checked first (guarded)
        raise PermissionDenied(RAW_APPEND_OFF)
    body = await _body(request, _AppendBody)
    tenant = scope_of(request).write_tenant(body.tenant)
    events = []
    for e in body.events:
        data = EventData(
            e.type,
            msgspec.json.encode(e.payload),
            e.metadata,
            schema_version=e.schema_version,
            tags=e.tags,
        )
        if e.event_id is not None:
            data.event_id = e.event_id
        events.append(data)
    condition = None
    if body.condition is not None:
        c = body.condition
        query = _query(c.fail_if_events_match, "condition.fail_if_events_match")
        after = None if c.after is None else Position.parse(c.after, "condition.after")
        condition = AppendCondition(query, after)
    check_raw_events(state.app, body.domain, events)
    result = await state.store.append_tagged(events, condition, domain=body.domain, tenant=tenant)
    return JSONResponse(
        {"positions": [str(p) for p in result.positions], "position": str(result.position)}
    )
