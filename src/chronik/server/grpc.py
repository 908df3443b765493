"""The gRPC server: CommandGateway, EventStore, Catalog and Projections over one Chronik app,
health and reflection (v1 and v1alpha).

It also runs the app's projections (read models, remote projectors, sagas) beside it.

Every chronik error becomes a status code with a plain message (never a stack trace): rejection
FAILED_PRECONDITION, wrong expected version ABORTED, validation INVALID_ARGUMENT (a malformed
protobuf message too), a message over ``max_message_bytes`` RESOURCE_EXHAUSTED, unknown domain
or type NOT_FOUND, store or remote service unreachable UNAVAILABLE, auth UNAUTHENTICATED or
PERMISSION_DENIED. Only a bug (an exception that is not a chronik error) is INTERNAL, logged
once per minute and kind. ``stop`` lets in-flight calls finish within a grace period and ends
subscriptions cleanly.

EventStore.Append and AppendTagged (DCB) write events with no business logic in between, so
they are off unless enabled (``raw_append=True``, config ``grpc.raw_append: true``); with auth
they need the ``append`` right, and events are checked against the registered schemas (see
chronik.server.grpc_events, which serves the EventStore). Projections
admin writes are off without auth unless enabled (``admin_writes=True``, config
``grpc.admin_writes: true``; see chronik.server.grpc_admin). Health answers SERVING only while
the store answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from chronik.app import Chronik
from chronik.errors import InvalidValue, SerializationError
from chronik.projections import Projection, ProjectionRunner
from chronik.server.auth import Auth
from chronik.server.grpc_admin import CatalogService, ProjectionsService
from chronik.server.grpc_edge import (
    EdgeInterceptor,
    GrpcHealth,
    Service,
    bind_error,
    check_payload,
    status_for,
)
from chronik.server.grpc_events import EventStoreService
from chronik.server.grpc_gdpr import PersonalDataService
from chronik.server.grpc_limits import LimitInterceptor
from chronik.server.limits import Limiter
from chronik.server.reflection import enable_reflection
from chronik.server.remote import MAX_MESSAGE_BYTES, channel_options
from chronik.server.routing import incoming, router_of
from chronik.server.tenancy import TenancyConfig
from chronik.server.tls import CertificateFiles, TlsConfig, grpc_credentials
from chronik.server.wire import command_from_wire, event_to_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["ERROR_KEY", "GrpcServer", "bind_error", "status_for"]

log = logging.getLogger("chronik.server")
ERROR_KEY: Final = "chronik-error"  # trailing metadata: the chronik error class name


class CommandGatewayService(Service, rpc.CommandGatewayServicer):
    """CommandGateway.Handle: a command in, the events it appended out."""

    async def Handle(
        self, request: pb.CommandRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommandResponse:
        async def call() -> pb.CommandResponse:
            # a command another node forwarded: its caller was checked there (routing)
            router = router_of(self.app)
            forwarded = router is not None and router.accept(context.invocation_metadata() or ())
            key = None if forwarded else self._key(context)
            if key is not None:
                Auth.allow_command(key, request.domain, request.type)
            if request.payload:  # the value rule; JSON that is no JSON at all is for the
                try:  # model to refuse (InvalidCommand, naming the command type)
                    check_payload(bytes(request.payload), "payload")
                except InvalidValue:
                    raise
                except SerializationError:
                    pass
            command = command_from_wire(request)
            if not forwarded:  # the caller's tenant (a forwarded one was scoped at its origin)
                command.tenant = self._scope(key).write_tenant(command.tenant)
            with incoming(context.time_remaining(), forwarded):  # the deadline, one hop
                result = await self.app.dispatch(command)
            return pb.CommandResponse(
                events=[event_to_wire(e) for e in result.events],
                version=-1 if result.version is None else result.version,
                duplicate=result.duplicate,
                command_id=result.command_id,
            )

        return await self._guarded(context, call)


class _GenericOnly:
    """``server`` as a generated ``add_*Servicer_to_server`` sees it, keeping only its generic
    handlers. grpc.aio runs one task per registered method, each waiting for a call of its
    method, and waits on all of them for every call: with every chronik service registered
    (~28 tasks) that wait cost a command ~15 us of CPU. Only the hot CommandGateway
    registers; the other services are found by name (one dict lookup per handler)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, name: str, handlers: dict[str, Any]) -> None:
        """Ignored: the generic handler serves the methods."""


class GrpcServer:
    """Serves one Chronik app over gRPC; ``await start()``, then ``await stop()``.

    ``raw_append`` enables EventStore.Append and AppendTagged, ``admin_writes`` the Projections
    admin calls without auth (both off by default); ``max_message_bytes`` bounds every message
    both ways (larger ones are RESOURCE_EXHAUSTED). With ``tls`` it serves TLS only (the
    certificate files are reloaded when they change: ``chronik.server.tls``); with ``limiter``
    calls past the node's limits are RESOURCE_EXHAUSTED at once (``chronik.server.limits``).
    ``tenancy`` (default: the auth's) scopes every call to its key's tenant
    (``chronik.server.tenancy``); required without auth, calls reach nothing.
    """

    def __init__(
        self,
        app: Chronik,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        auth: Auth | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        projections: Sequence[Projection] = (),
        raw_append: bool = False,
        admin_writes: bool = False,
        tls: TlsConfig | None = None,
        limiter: Limiter | None = None,
        tenancy: TenancyConfig | None = None,
        lease_ttl: float = 10.0,
        heartbeat: float = 1.0,
    ) -> None:
        self.app = app
        self.tls = None if tls is None else tls.check("grpc.tls")
        self.tls_files: CertificateFiles | None = None
        self.limiter = limiter
        self.runner = (
            ProjectionRunner(
                app.store, projections, health=app.health, lease_ttl=lease_ttl, heartbeat=heartbeat
            )
            if projections
            else None
        )
        self.host = host
        self.port = port
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.raw_append = raw_append
        self.admin_writes = admin_writes
        self.tenancy = tenancy or (auth.tenancy if auth is not None else TenancyConfig())
        if auth is not None:
            auth.tenancy = self.tenancy
        self._server: grpc.aio.Server | None = None
        self._events: EventStoreService | None = None
        self._health = GrpcHealth(app)

    async def start(self) -> int:
        """Bind, open the app and start serving; returns the bound port (``port=0``: any free).

        PortInUse if another process listens on the port (never shared: no SO_REUSEPORT).
        """
        options: list[tuple[str, Any]] = [
            *channel_options(self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        interceptors: list[grpc.aio.ServerInterceptor] = [EdgeInterceptor()]
        if self.limiter is not None:  # first: a refusal comes before any parsing
            interceptors.insert(0, LimitInterceptor(self.limiter, self.auth))
        server = grpc.aio.server(interceptors=interceptors, options=options)
        gateway = CommandGatewayService(self.app, self.auth)
        rpc.add_CommandGatewayServicer_to_server(gateway, server)
        cold: Any = _GenericOnly(server)  # every other service: found by name
        self._events = EventStoreService(self.app, self.auth, raw_append=self.raw_append)
        rpc.add_EventStoreServicer_to_server(self._events, cold)
        guard = Service(self.app, self.auth)._guarded
        catalog = CatalogService(self.app, self.auth, guard)
        rpc.add_CatalogServicer_to_server(catalog, cold)
        projections = ProjectionsService(self.app, self.auth, guard, admin_writes=self.admin_writes)
        rpc.add_ProjectionsServicer_to_server(projections, cold)
        personal = PersonalDataService(self.app, self.auth, guard, admin_writes=self.admin_writes)
        rpc.add_PersonalDataServicer_to_server(personal, cold)
        for service in (gateway, self._events, catalog, projections, personal):
            service.tenancy = self.tenancy  # scopes calls on a server without auth
        health_pb2_grpc.add_HealthServicer_to_server(self._health, cold)
        names = [
            pb.DESCRIPTOR.services_by_name["CommandGateway"].full_name,
            pb.DESCRIPTOR.services_by_name["EventStore"].full_name,
            pb.DESCRIPTOR.services_by_name["Catalog"].full_name,
            pb.DESCRIPTOR.services_by_name["Projections"].full_name,
            pb.DESCRIPTOR.services_by_name["PersonalData"].full_name,
            health.SERVICE_NAME,
        ]
        enable_reflection(names, cold)  # v1 and v1alpha
        plain = self.host.startswith("[") or ":" not in self.host
        address = self.host if plain else f"[{self.host}]"
        try:
            if self.tls is None:
                bound = server.add_insecure_port(f"{address}:{self.port}")
            else:
                credentials, self.tls_files = grpc_credentials(self.tls)
                bound = server.add_secure_port(f"{address}:{self.port}", credentials)
        except RuntimeError:  # grpcio >= 1.50 raises where older versions returned 0
            bound = 0
        if not bound:
            raise bind_error("gRPC", self.host, self.port)
        try:
            await self.app.open()
        except BaseException:
            await server.stop(None)
            raise
        self.port = bound
        await server.start()
        self._health.names = ["", *names[:2]]
        await self._health.probe()
        self._server = server
        if self.runner is not None:
            await self.runner.start()
        log.info(
            "gRPC listening on %s:%s (max message %d bytes, raw append %s, %s)",
            self.host,
            bound,
            self.max_message_bytes,
            "on" if self.raw_append else "off",
            "plaintext" if self.tls is None else "TLS",
        )
        return bound

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace`` s, close the app."""
        server, self._server = self._server, None
        if server is not None:
            await self._health.enter_graceful_shutdown()
            stopping = asyncio.ensure_future(server.stop(grace))  # refuses new calls at once
            await asyncio.sleep(0)
            if self._events is not None:
                await self._events.close_subscriptions()
            await stopping
        if self.runner is not None:
            await self.runner.stop()
        await self.app.close()

    @property
    def subscriptions(self) -> int:
        """Open Subscribe streams."""
        return 0 if self._events is None else len(self._events.subscriptions)

    async def wait(self) -> None:
        """Wait until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return f"<GrpcServer {self.host}:{self.port} {state}>"
