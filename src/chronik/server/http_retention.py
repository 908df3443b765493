"""HTTP endpoints of deletes, retention and the scavenger (admin writes need the admin right,
or ``http.admin_writes`` without auth):

- ``POST /v1/admin/streams/delete`` {domain, aggregate_id, tenant, hard, expected}: a soft or
  hard delete (``store.delete_stream``);
- ``POST /v1/admin/streams/compact`` {domain, aggregate_id, tenant, upto}: close the books of
  an aggregate's stream at ``upto`` with its model's summary event
  (``chronik.lifecycle.compaction.compact_aggregate``; the domain must be the app's);
- ``GET|PUT /v1/admin/retention/{domain}/{aggregate_id}`` (?tenant=): a stream's rules
  (PUT body: {max_age, max_count, truncate_before}); a GET adds the ``default`` the scavenger
  applies to it (its tenant's for its domain, ``tenant:*``, else its domain's) and the
  ``effective`` rules (its own over that default);
- ``GET /v1/admin/retention-defaults``: the default rules the scavenger applies, by key
  (``domain``, ``tenant:domain``, ``tenant:*``); a tenant-scoped credential sees its own
  tenant's keys and the domain-wide ones, never another tenant's;
- ``POST /v1/admin/scavenge`` {dry_run, batch_size}: one scavenger run now, under the lease
  (409 LeaseHeld while another process runs it), its report;
- ``GET /v1/admin/scavenger``: the background scavenger of this process (health, last report).

Module-level handlers over ``chronik.server.http_state``; imports the HTTP state, never the
admin UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chronik.errors import LeaseHeld, ValidationError
from chronik.lifecycle.compaction import compact_aggregate
from chronik.lifecycle.scavenger import LEASE, Scavenger, default_for
from chronik.messages import ANY, NO_STREAM, STREAM_EXISTS, Expected, StreamId
from chronik.server.http_state import guarded, read_body, scope_of, state_of
from chronik.server.openapi_retention import MAX_SEQUENCE
from chronik.store.retention import Retention, check_retention

__all__ = ["retention_routes"]

_NAMED: dict[str, Expected] = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}


class DeleteBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a delete."""

    domain: str
    aggregate_id: str
    tenant: str = ""
    hard: bool = False
    expected: str | int = "any"


class CompactBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a compaction."""

    domain: str
    aggregate_id: str
    upto: int
    tenant: str = ""


class RulesBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a retention PUT."""

    max_age: float | str | None = None
    max_count: int | None = None
    truncate_before: int | None = None


class ScavengeBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a scavenge request."""

    dry_run: bool = False
    batch_size: int = 500


def _decode(data: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}", field="body") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"the body is not JSON: {exc}", field="body") from None


def _expected(value: str | int) -> Expected:
    if isinstance(value, int):
        return value
    if value in _NAMED:
        return _NAMED[value]
    raise ValidationError(
        f"expected must be any, no_stream, stream_exists or a sequence, got {value!r}",
        field="expected",
    )


def _rules(rules: Retention) -> dict[str, Any]:
    return {
        "max_age": rules.max_age,
        "max_count": rules.max_count,
        "truncate_before": rules.truncate_before,
    }


def _stream(request: Request, write: bool = False) -> StreamId:
    """The path's stream in the request's tenant scope: another tenant's is 404 to a read,
    403 to a write (``chronik.server.tenancy``)."""
    p, q = request.path_params, request.query_params
    scope = scope_of(request)
    if write:
        return StreamId(p["domain"], p["aggregate_id"], scope.write_tenant(q.get("tenant", "")))
    return scope.read_stream(StreamId(p["domain"], p["aggregate_id"], q.get("tenant", "")))


async def delete_stream(request: Request) -> Response:
    """``POST /v1/admin/streams/delete``: delete a stream (soft, or hard with ``hard``)."""
    body: DeleteBody = _decode(await read_body(request), DeleteBody)
    stream = StreamId(body.domain, body.aggregate_id, scope_of(request).write_tenant(body.tenant))
    done = await state_of(request).store.delete_stream(
        stream, _expected(body.expected), hard=body.hard
    )
    return JSONResponse(
        {
            "stream": str(stream),
            "hard": body.hard,
            "sequence": done.first_sequence,
            "position": str(done.position),
        }
    )


async def compact_stream(request: Request) -> Response:
    """``POST /v1/admin/streams/compact``: replace an aggregate's events 0..upto by its
    model's summary (the same answer on a retry)."""
    body: CompactBody = _decode(await read_body(request), CompactBody)
    stream = StreamId(body.domain, body.aggregate_id, scope_of(request).write_tenant(body.tenant))
    if not 0 <= body.upto <= MAX_SEQUENCE:
        raise ValidationError(f"invalid sequence {body.upto!r}", field="upto")
    app = state_of(request).app
    model = app.bus.model(stream.domain)
    done = await compact_aggregate(
        app.store, app.registry, model, stream.aggregate_id, body.upto, tenant=stream.tenant
    )
    return JSONResponse(
        {
            "stream": str(stream),
            "upto": done.sequence,
            "event_id": done.event_id,
            "type": done.type,
            "position": str(done.position),
        }
    )


async def put_retention(request: Request) -> Response:
    """``PUT /v1/admin/retention/{domain}/{aggregate_id}``: set a stream's rules."""
    stream = _stream(request, write=True)
    body: RulesBody = _decode(await read_body(request), RulesBody)
    checked = check_retention(body.max_age, body.max_count, body.truncate_before)
    rules = await state_of(request).store.set_retention(stream, checked)
    return JSONResponse({"stream": str(stream), **_rules(rules)})


def retention_routes(defaults: Mapping[str, Retention] | None = None) -> list[Route]:
    """The routes, a scavenge run applying ``defaults`` (the config's per-domain rules)."""

    def current(request: Request) -> Mapping[str, Retention]:
        """The defaults the scavenger applies: the running one's, else the config's."""
        running = Scavenger.running_on(state_of(request).store)
        found = running.defaults if running is not None else defaults
        return found or {}

    async def get_retention(request: Request) -> Response:
        """``GET /v1/admin/retention/{domain}/{aggregate_id}``: a stream's own rules, its
        default and the effective rules."""
        stream = _stream(request)
        rules = await state_of(request).store.get_retention(stream)
        default = default_for(current(request), stream)
        return JSONResponse(
            {
                "stream": str(stream),
                **_rules(rules),
                "default": None if default is None else _rules(default),
                "effective": _rules(rules.over(default)),
            }
        )

    async def retention_defaults(request: Request) -> Response:
        """``GET /v1/admin/retention-defaults``: the defaults in the request's tenant scope."""
        scope = scope_of(request)
        shown = {
            key: _rules(rules)
            for key, rules in sorted(current(request).items())
            if (":" not in key and not scope.denied) or scope.sees(key.partition(":")[0])
        }
        return JSONResponse({"tenant": scope.tenant, "defaults": shown})

    async def scavenge_now(request: Request) -> Response:
        """``POST /v1/admin/scavenge``: one run now (or a dry run), under the lease."""
        body: ScavengeBody = _decode(await read_body(request), ScavengeBody)
        store = state_of(request).store
        running = Scavenger.running_on(store)
        rules = running.defaults if running is not None else defaults
        runner = Scavenger(store, rules, batch_size=body.batch_size)
        try:
            report = await runner.run_once(dry_run=body.dry_run)
        finally:
            await store.release_lease(LEASE, runner.owner)
        if report is None:
            raise LeaseHeld(LEASE, 0, runner.owner)
        return JSONResponse(msgspec.to_builtins(report))

    async def scavenger_status(request: Request) -> Response:
        """``GET /v1/admin/scavenger``: the background scavenger here, if it runs."""
        running = Scavenger.running_on(state_of(request).store)
        return JSONResponse(
            {"running": False}
            if running is None
            else {"interval": running.interval, **running.health()}
        )

    tail = "{domain}/{aggregate_id:path}"
    return [
        Route("/v1/admin/streams/delete", guarded(delete_stream, "admin"), methods=["POST"]),
        Route("/v1/admin/streams/compact", guarded(compact_stream, "admin"), methods=["POST"]),
        Route(f"/v1/admin/retention/{tail}", guarded(get_retention, "read"), methods=["GET"]),
        Route("/v1/admin/retention-defaults", guarded(retention_defaults, "read")),
        Route(f"/v1/admin/retention/{tail}", guarded(put_retention, "admin"), methods=["PUT"]),
        Route(
            "/v1/admin/scavenge", guarded(scavenge_now, "admin", operator=True), methods=["POST"]
        ),
        Route("/v1/admin/scavenger", guarded(scavenger_status, "read", operator=True)),
    ]
