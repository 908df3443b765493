"""The gRPC Projections and Catalog services and EventStore.ListStreams: what the HTTP API
offers under ``/v1/projections``, ``GET /v1/schemas`` and ``GET /v1/streams``, over the same
calls.

Projections.List, Status and DeadLetters need the read right. Pause, Resume, Reset, Rebuild,
Retry and Drop are admin writes: with auth they need the key's ``admin`` right; without auth
they are refused (PERMISSION_DENIED, ``AdminWritesDisabled`` naming ``grpc.admin_writes``)
unless the server enables them (``GrpcServer(admin_writes=True)``, config
``grpc.admin_writes: true``). Every action goes through ``ProjectionAdmin``, as the CLI, the
HTTP API and the admin UI do: a rebuild or reset that would repeat the effects of a projection
declared ``replay="refuse"`` is refused whole (FAILED_PRECONDITION, ``ReplayRefused``).
Projections calls need an operator's key (tenant ``*``) whenever the key is tenant-scoped
(``chronik.server.tenancy``); ListStreams lists the key's tenant only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc

from chronik.app import Chronik
from chronik.errors import AdminWritesDisabled, PermissionDenied, ValidationError
from chronik.messages import DOMAIN_RE, Position
from chronik.projections import DeadLetter, ProjectionAdmin, ProjectionStatus
from chronik.server.auth import ApiKey, Auth
from chronik.server.catalog import catalog_of
from chronik.server.grpc_edge import parse_position
from chronik.server.tenancy import ALL, Scope, TenancyConfig
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "CatalogService",
    "GuardedService",
    "ProjectionsService",
    "dead_letter_to_wire",
    "list_streams",
    "status_to_wire",
]

DEFAULT_PAGE: Final = 100  # ListStreams: streams per page when the request gives no limit
MAX_PAGE: Final = 1000  # as GET /v1/streams?limit=
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,47}(/[0-9]{1,3})?")
_CURSOR_RE: Final = re.compile(r"[0-9]{1,12}")
Context = grpc.aio.ServicerContext[Any, Any]


def _text(value: str, field: str, max_length: int = 256) -> str | None:
    """A free-text field: printable, at most ``max_length`` characters (empty: None)."""
    if not value:
        return None
    if len(value) > max_length or not value.isprintable():
        raise ValidationError(
            f"invalid {field}: expected at most {max_length} printable characters", field=field
        )
    return value


async def list_streams(
    app: Chronik, request: pb.ListStreamsRequest, scope: Scope = ALL
) -> pb.ListStreamsResponse:
    """One page of streams, oldest first, from ``store.list_streams`` (as GET /v1/streams),
    filtered by tenant when the request names one, and to the scope's tenant (nothing for a
    denied scope). The cursor counts the matching streams before the page."""
    domain = request.domain or None
    if domain is not None and not DOMAIN_RE.fullmatch(domain):
        raise ValidationError(
            f"invalid domain {domain[:70]!r}: expected [a-z][a-z0-9_.-]{{0,63}}", field="domain"
        )
    prefix = _text(request.prefix, "prefix")
    tenant = (_text(request.tenant, "tenant") or "") if request.HasField("tenant") else None
    if scope.denied or (tenant is not None and not scope.sees(tenant)):
        return pb.ListStreamsResponse()
    if not scope.operator:
        tenant = scope.tenant
    if request.limit > MAX_PAGE:
        raise ValidationError(
            f"invalid limit {request.limit}: expected 0..{MAX_PAGE}", field="limit"
        )
    size = request.limit or DEFAULT_PAGE
    if request.cursor and not _CURSOR_RE.fullmatch(request.cursor):
        raise ValidationError(
            f"invalid cursor {request.cursor[:32]!r}: pass next_cursor of the previous page",
            field="cursor",
        )
    skip = int(request.cursor or 0)
    seen = 0
    page: list[pb.StreamInfo] = []
    more = False
    async for info in app.store.list_streams(domain, prefix, tenant=tenant):
        stream = info.stream
        seen += 1
        if seen <= skip:
            continue
        if len(page) == size:
            more = True
            break
        page.append(
            pb.StreamInfo(
                domain=stream.domain,
                aggregate_id=stream.aggregate_id,
                tenant=stream.tenant,
                version=info.version,
            )
        )
    return pb.ListStreamsResponse(streams=page, next_cursor=str(skip + size) if more else "")


def status_to_wire(s: ProjectionStatus) -> pb.ProjectionStatus:
    """One projection status as the Projections service sends it."""
    return pb.ProjectionStatus(
        name=s.name,
        state=s.state,
        version=s.version,
        generation=s.generation,
        building=s.building,
        position=s.position,
        build_position=s.build_position,
        head=s.head,
        lag_events=s.lag_events,
        lag_seconds=s.lag_seconds,
        events_per_s=s.events_per_s,
        processed=s.processed,
        last_error=s.last_error,
        heartbeat=s.heartbeat,
        alive=s.alive,
        owner=s.owner,
        dead_letters=s.dead_letters,
        horizon_events=s.horizon_events,
        horizon_seconds=s.horizon_seconds,
    )


def dead_letter_to_wire(d: DeadLetter) -> pb.DeadLetter:
    """One parked event as the Projections service sends it."""
    return pb.DeadLetter(
        projection=d.projection,
        event_id=d.event_id,
        generation=d.generation,
        position=d.position,
        stream=d.stream,
        sequence=d.sequence,
        type=d.type,
        error=d.error,
        attempts=d.attempts,
        blocked=d.blocked,
        parked_at=d.parked_at,
    )


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        shown = value[:70]
        raise ValidationError(
            f"invalid projection name {shown!r}: expected [a-z][a-z0-9_]{{0,47}}, or name/k "
            "for one partition",
            field="name",
        )
    return value


class GuardedService:
    """A servicer's shared part: the app, the auth, and ``guarded``, which runs one call and
    turns what it raises into the status code and trailers (the gRPC server's)."""

    def __init__(
        self,
        app: Chronik,
        auth: Auth | None,
        guarded: Callable[[Context, Callable[[], Awaitable[Any]]], Awaitable[Any]],
    ) -> None:
        self.app = app
        self.auth = auth
        self._guarded = guarded

    #: tenancy when the server has no auth (``GrpcServer`` sets it)
    tenancy: TenancyConfig = TenancyConfig()

    def _key(self, context: Context) -> ApiKey | None:
        if self.auth is None:
            return None
        return self.auth.authenticate(context.invocation_metadata() or ())

    def _scope(self, key: ApiKey | None) -> Scope:
        return Scope.of(None, self.tenancy) if self.auth is None else self.auth.scope(key)

    def _allow_read(self, context: Context, operator: bool = False) -> Scope:
        """The read right (and an operator's scope with ``operator``); the caller's scope."""
        key = self._key(context)
        if key is not None:
            Auth.allow(key, "read")
        scope = self._scope(key)
        if operator:
            scope.require_operator(f"{type(self).__name__.removesuffix('Service')} calls")
        return scope


class CatalogService(GuardedService, rpc.CatalogServicer):
    """Catalog.Describe: each domain's command and event types, every event type with its
    JSON Schema, the domains emitting it and every schema version with its upcaster."""

    async def Describe(self, request: pb.DescribeRequest, context: Context) -> Any:
        async def call() -> pb.DescribeResponse:
            self._allow_read(context)
            catalog = catalog_of(self.app)
            return pb.DescribeResponse(
                domains=[
                    pb.DomainSchema(
                        domain=d.domain,
                        logic=d.logic,
                        open=d.open,
                        note=d.note,
                        commands=[
                            pb.CommandSchema(type=c.type, json_schema=json.dumps(c.schema))
                            for c in d.commands
                        ],
                        events=d.events,
                    )
                    for d in catalog.domains
                ],
                events=[
                    pb.EventSchema(
                        type=e.type,
                        schema_version=e.schema_version,
                        aliases=e.aliases,
                        json_schema=json.dumps(e.schema),
                        domains=e.domains,
                        versions=[
                            pb.EventVersion(
                                version=v.version,
                                current=v.current,
                                upcaster=v.upcaster,
                                readable=v.readable,
                            )
                            for v in e.versions
                        ],
                    )
                    for e in catalog.events
                ],
            )

        return await self._guarded(context, call)


class ProjectionsService(GuardedService, rpc.ProjectionsServicer):
    """Projections: status and dead letters (read right), control requests (admin right, or
    ``admin_writes`` without auth), all through ``ProjectionAdmin``."""

    def __init__(
        self,
        app: Chronik,
        auth: Auth | None,
        guarded: Callable[[Context, Callable[[], Awaitable[Any]]], Awaitable[Any]],
        *,
        admin_writes: bool = False,
    ) -> None:
        super().__init__(app, auth, guarded)
        self.admin_writes = admin_writes
        self.admin = ProjectionAdmin(app.store)

    def _allow_admin(self, context: Context) -> None:
        key = self._key(context)
        if key is None:
            if not self.admin_writes:
                raise AdminWritesDisabled("grpc.admin_writes")
        elif not key.admin:
            raise PermissionDenied(f"{key.name} may not run projection admin actions")
        self._scope(key).require_operator(f"{type(self).__name__.removesuffix('Service')} calls")

    async def _action(self, context: Context, name: str, action: str, arg: str = "") -> Any:
        async def call() -> pb.ActionResponse:
            self._allow_admin(context)
            request_id = await self.admin.request(_name(name), action, arg)
            return pb.ActionResponse(request_id=request_id, projection=name, action=action)

        return await self._guarded(context, call)

    async def List(self, request: pb.ListProjectionsRequest, context: Context) -> Any:
        async def call() -> pb.ProjectionsResponse:
            self._allow_read(context, operator=True)
            statuses = await self.admin.statuses()
            return pb.ProjectionsResponse(projections=[status_to_wire(s) for s in statuses])

        return await self._guarded(context, call)

    async def Status(self, request: pb.ProjectionRequest, context: Context) -> Any:
        async def call() -> pb.ProjectionsResponse:
            self._allow_read(context, operator=True)
            statuses = await self.admin.status_of(_name(request.name))
            return pb.ProjectionsResponse(projections=[status_to_wire(s) for s in statuses])

        return await self._guarded(context, call)

    async def DeadLetters(self, request: pb.ProjectionRequest, context: Context) -> Any:
        async def call() -> pb.DeadLettersResponse:
            self._allow_read(context, operator=True)
            letters = await self.admin.dead_letters(_name(request.name))
            return pb.DeadLettersResponse(dead_letters=[dead_letter_to_wire(d) for d in letters])

        return await self._guarded(context, call)

    async def Pause(self, request: pb.ProjectionRequest, context: Context) -> Any:
        return await self._action(context, request.name, "pause")

    async def Resume(self, request: pb.ProjectionRequest, context: Context) -> Any:
        return await self._action(context, request.name, "resume")

    async def Rebuild(self, request: pb.ProjectionRequest, context: Context) -> Any:
        return await self._action(context, request.name, "rebuild")

    async def Reset(self, request: pb.ResetRequest, context: Context) -> Any:
        async def call() -> pb.ActionResponse:
            self._allow_admin(context)
            to = parse_position(request.to, "to")
            if to is not None:
                head = await self.app.store.head()
                if to > (head or Position(0)):
                    shown = f"the head {head}" if head else "the head (the store is empty)"
                    raise ValidationError(f"invalid to: position {to} is past {shown}", field="to")
            name = _name(request.name)
            request_id = await self.admin.request(name, "reset", "" if to is None else str(to))
            return pb.ActionResponse(request_id=request_id, projection=name, action="reset")

        return await self._guarded(context, call)

    async def Repartition(self, request: pb.RepartitionRequest, context: Context) -> Any:
        async def call() -> pb.ActionResponse:
            self._allow_admin(context)
            name = _name(request.name)
            request_id = await self.admin.repartition(name, int(request.partitions))
            return pb.ActionResponse(request_id=request_id, projection=name, action="repartition")

        return await self._guarded(context, call)

    async def Retry(self, request: pb.DeadLetterRequest, context: Context) -> Any:
        async def call() -> pb.ActionResponse:
            self._allow_admin(context)
            event_id = _text(request.event_id, "event_id", 64) or ""
            request_id = await self.admin.request(_name(request.name), "retry", event_id)
            return pb.ActionResponse(request_id=request_id, projection=request.name, action="retry")

        return await self._guarded(context, call)

    async def Drop(self, request: pb.DeadLetterRequest, context: Context) -> Any:
        async def call() -> pb.DropResponse:
            self._allow_admin(context)
            event_id = _text(request.event_id, "event_id", 64)
            dropped = await self.admin.drop_dead_letters(_name(request.name), event_id)
            return pb.DropResponse(dropped=dropped)

        return await self._guarded(context, call)
