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

EventStore.Append writes events with no business logic in between, so it is off unless enabled
(``raw_append=True``, config ``grpc.raw_append: true``); with auth it needs the ``append`` right,
and events are checked against the registered schemas (``check_raw_append``). Projections
admin writes are off without auth unless enabled (``admin_writes=True``, config
``grpc.admin_writes: true``; see chronik.server.grpc_admin). Health answers SERVING only while
the store answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from chronik.app import Chronik
from chronik.errors import (
    ChronikError,
    CommandRejected,
    InvalidValue,
    PermissionDenied,
    SerializationError,
)
from chronik.messages import RecordedEvent, StreamId
from chronik.projections import Projection, ProjectionRunner
from chronik.server.auth import Action, ApiKey, Auth
from chronik.server.grpc_admin import CatalogService, ProjectionsService, list_streams
from chronik.server.grpc_edge import (
    EdgeInterceptor,
    GrpcHealth,
    bind_error,
    check_payload,
    check_raw_append,
    check_sequence,
    parse_position,
    report_bug,
    status_for,
)
from chronik.server.reflection import enable_reflection
from chronik.server.remote import MAX_MESSAGE_BYTES, channel_options
from chronik.server.wire import (
    command_from_wire,
    error_trailers,
    event_data_from_wire,
    event_to_wire,
    expected_from_wire,
)
from chronik.store.subscription import Subscription
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["ERROR_KEY", "GrpcServer", "bind_error", "status_for"]

log = logging.getLogger("chronik.server")
T = TypeVar("T")
CAUGHT_UP_POLL: Final = 0.05
ERROR_KEY: Final = "chronik-error"  # trailing metadata: the chronik error class name
RAW_APPEND_OFF: Final = (
    "raw appends are disabled: EventStore.Append bypasses the business logic; enable it with "
    "`grpc.raw_append: true` in the config (GrpcServer(raw_append=True))"
)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    code = status_for(exc)
    if isinstance(exc, ChronikError):
        message = exc.reason if isinstance(exc, CommandRejected) else str(exc)
        context.set_trailing_metadata(error_trailers(exc))
    else:
        report_bug(exc, "a gRPC call")
        message = "internal error"
    await context.abort(code, message)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's exception, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class _Service:
    def __init__(self, app: Chronik, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    def _key(self, context: grpc.aio.ServicerContext[Any, Any]) -> ApiKey | None:
        if self.auth is None:
            return None
        return self.auth.authenticate(context.invocation_metadata() or ())

    def _allow(self, context: grpc.aio.ServicerContext[Any, Any], action: Action) -> None:
        key = self._key(context)
        if key is not None:
            Auth.allow(key, action)

    async def _guarded(
        self, context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await call()
        except (ChronikError, Exception) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            await _abort(context, exc)
            raise  # pragma: no cover - abort raises


class CommandGatewayService(_Service, rpc.CommandGatewayServicer):
    """CommandGateway.Handle: a command in, the events it appended out."""

    async def Handle(
        self, request: pb.CommandRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommandResponse:
        async def call() -> pb.CommandResponse:
            key = self._key(context)
            if key is not None:
                Auth.allow_command(key, request.domain, request.type)
            if request.payload:  # the value rule; JSON that is no JSON at all is for the
                try:  # model to refuse (InvalidCommand, naming the command type)
                    check_payload(bytes(request.payload), "payload")
                except InvalidValue:
                    raise
                except SerializationError:
                    pass
            result = await self.app.dispatch(command_from_wire(request))
            return pb.CommandResponse(
                events=[event_to_wire(e) for e in result.events],
                version=-1 if result.version is None else result.version,
                duplicate=result.duplicate,
                command_id=result.command_id,
            )

        return await self._guarded(context, call)


class EventStoreService(_Service, rpc.EventStoreServicer):
    """Append, ReadStream, ReadAll and Subscribe on the app's store."""

    def __init__(self, app: Chronik, auth: Auth | None, *, raw_append: bool = False) -> None:
        super().__init__(app, auth)
        self.raw_append = raw_append
        self.subscriptions: set[Subscription] = set()
        self.stopping = False

    async def close_subscriptions(self) -> None:
        """End every open Subscribe stream cleanly, and any that starts from now on."""
        self.stopping = True
        for sub in list(self.subscriptions):
            await sub.close()

    async def Append(
        self, request: pb.AppendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AppendResponse:
        async def call() -> pb.AppendResponse:
            self._allow(context, "append")  # credentials first, then the switch
            if not self.raw_append:
                raise PermissionDenied(RAW_APPEND_OFF)
            stream = StreamId(request.domain, request.aggregate_id, request.tenant)
            if request.WhichOneof("expected") == "sequence":
                check_sequence(request.sequence, "sequence")
            events = [event_data_from_wire(e) for e in request.events]
            check_raw_append(self.app, stream, events)
            result = await self.app.store.append(stream, events, expected_from_wire(request))
            return pb.AppendResponse(
                first_sequence=result.first_sequence,
                last_sequence=result.last_sequence,
                position=str(result.position),
                positions=[str(p) for p in result.positions],
            )

        return await self._guarded(context, call)

    async def ListStreams(
        self, request: pb.ListStreamsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListStreamsResponse:
        async def call() -> pb.ListStreamsResponse:
            self._allow(context, "read")
            return await list_streams(self.app, request)

        return await self._guarded(context, call)

    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            self._allow(context, "read")
            stream = StreamId(request.domain, request.aggregate_id, request.tenant)
            start = None
            if request.HasField("from_sequence"):
                start = check_sequence(request.from_sequence, "from_sequence")
            async for event in self.app.store.read_stream(
                stream, start, request.backward, request.limit or None
            ):
                yield event_to_wire(event)
        except (ChronikError, Exception) as exc:
            await _abort(context, exc)

    async def ReadAll(
        self, request: pb.ReadAllRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            self._allow(context, "read")
            async for event in self.app.store.read_all(
                after=parse_position(request.after, "after"),
                domains=list(request.domains) or None,
                types=list(request.types) or None,
                limit=request.limit or None,
                backward=request.backward,
                before=parse_position(request.before, "before"),
            ):
                yield event_to_wire(event)
        except (ChronikError, Exception) as exc:
            await _abort(context, exc)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            self._allow(context, "read")
            sub = self.app.store.subscribe(
                parse_position(request.after, "after"),
                domains=list(request.domains) or None,
                types=list(request.types) or None,
            )
        except (ChronikError, Exception) as exc:
            await _abort(context, exc)
            return
        if self.stopping:
            return
        self.subscriptions.add(sub)
        pending: asyncio.Future[RecordedEvent] | None = None  # the next event, during catch-up
        try:
            async with sub:
                events = sub.__aiter__()
                marked = False
                while True:
                    try:
                        if pending is None and marked:  # live: no task, no polling
                            event = await events.__anext__()
                        else:
                            if pending is None:
                                pending = asyncio.ensure_future(anext(events))
                            if not marked:
                                await asyncio.wait({pending}, timeout=CAUGHT_UP_POLL)
                                if not pending.done():
                                    if sub.caught_up:
                                        marked = True
                                        yield pb.SubscribeResponse(
                                            caught_up=str(sub.position or "")
                                        )
                                    continue
                            event = await pending
                            pending = None
                    except StopAsyncIteration:
                        return
                    except (ChronikError, Exception) as exc:
                        await _abort(context, exc)
                        return
                    yield pb.SubscribeResponse(event=event_to_wire(event))
        finally:
            if pending is not None:  # its end (StopAsyncIteration on close) is retrieved
                pending.cancel()
                pending.add_done_callback(_retrieve)
            self.subscriptions.discard(sub)


class GrpcServer:
    """Serves one Chronik app over gRPC; ``await start()``, then ``await stop()``.

    ``raw_append`` enables EventStore.Append, ``admin_writes`` the Projections admin calls
    without auth (both off by default); ``max_message_bytes`` bounds every message both ways
    (larger ones are RESOURCE_EXHAUSTED).
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
    ) -> None:
        self.app = app
        self.runner = (
            ProjectionRunner(app.store, projections, health=app.health) if projections else None
        )
        self.host = host
        self.port = port
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.raw_append = raw_append
        self.admin_writes = admin_writes
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
        server = grpc.aio.server(interceptors=[EdgeInterceptor()], options=options)
        rpc.add_CommandGatewayServicer_to_server(CommandGatewayService(self.app, self.auth), server)
        self._events = EventStoreService(self.app, self.auth, raw_append=self.raw_append)
        rpc.add_EventStoreServicer_to_server(self._events, server)
        guard = _Service(self.app, self.auth)._guarded
        rpc.add_CatalogServicer_to_server(CatalogService(self.app, self.auth, guard), server)
        projections = ProjectionsService(self.app, self.auth, guard, admin_writes=self.admin_writes)
        rpc.add_ProjectionsServicer_to_server(projections, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [
            pb.DESCRIPTOR.services_by_name["CommandGateway"].full_name,
            pb.DESCRIPTOR.services_by_name["EventStore"].full_name,
            pb.DESCRIPTOR.services_by_name["Catalog"].full_name,
            pb.DESCRIPTOR.services_by_name["Projections"].full_name,
            health.SERVICE_NAME,
        ]
        enable_reflection(names, server)  # v1 and v1alpha
        plain = self.host.startswith("[") or ":" not in self.host
        address = self.host if plain else f"[{self.host}]"
        try:
            bound = server.add_insecure_port(f"{address}:{self.port}")
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
            "gRPC listening on %s:%s (max message %d bytes, raw append %s)",
            self.host,
            bound,
            self.max_message_bytes,
            "on" if self.raw_append else "off",
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
