"""The gRPC server: CommandGateway and EventStore over one Chronik app, health and reflection.

It also runs the app's projections (read models, remote projectors, sagas) beside it.

Every chronik error becomes a status code with a plain message (never a stack trace): rejection
FAILED_PRECONDITION, wrong expected version ABORTED, validation INVALID_ARGUMENT, unknown domain
or type NOT_FOUND, store or remote service unreachable UNAVAILABLE, auth UNAUTHENTICATED or
PERMISSION_DENIED. ``stop`` lets in-flight calls finish within a grace period and ends
subscriptions cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chronik.app import Chronik
from chronik.errors import (
    AuthenticationError,
    ChronikError,
    CommandRejected,
    ConcurrencyError,
    DuplicateEventError,
    PermissionDenied,
    ServiceUnavailable,
    StoreClosed,
    StoreUnavailable,
    UnknownCommandType,
    UnknownDomain,
    UnknownEventType,
    ValidationError,
)
from chronik.messages import RecordedEvent, StreamId
from chronik.projections import Projection, ProjectionRunner
from chronik.server.auth import ApiKey, Auth
from chronik.server.remote import MAX_MESSAGE_BYTES, channel_options
from chronik.server.wire import (
    command_from_wire,
    event_data_from_wire,
    event_to_wire,
    expected_from_wire,
    position_from_wire,
)
from chronik.subscriptions import Subscription
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["ERROR_KEY", "GrpcServer", "status_for"]

log = logging.getLogger("chronik.server")
T = TypeVar("T")
CAUGHT_UP_POLL: Final = 0.05
ERROR_KEY: Final = "chronik-error"  # trailing metadata: the chronik error class name

_STATUS: Final[list[tuple[type[BaseException], grpc.StatusCode]]] = [
    (CommandRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (ConcurrencyError, grpc.StatusCode.ABORTED),
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownDomain, grpc.StatusCode.NOT_FOUND),
    (UnknownCommandType, grpc.StatusCode.NOT_FOUND),
    (UnknownEventType, grpc.StatusCode.NOT_FOUND),
    (ServiceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreClosed, grpc.StatusCode.UNAVAILABLE),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (DuplicateEventError, grpc.StatusCode.ALREADY_EXISTS),
]


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code a chronik error maps to (INTERNAL for anything unexpected)."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    code = status_for(exc)
    if isinstance(exc, ChronikError):
        message = exc.reason if isinstance(exc, CommandRejected) else str(exc)
        context.set_trailing_metadata(((ERROR_KEY, type(exc).__name__),))
    else:
        log.exception("unexpected error in a gRPC call", exc_info=exc)
        message = "internal error"
    await context.abort(code, message)


class _Service:
    def __init__(self, app: Chronik, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    def _key(self, context: grpc.aio.ServicerContext[Any, Any]) -> ApiKey | None:
        if self.auth is None:
            return None
        return self.auth.authenticate(context.invocation_metadata() or ())

    def _allow(
        self, context: grpc.aio.ServicerContext[Any, Any], action: Literal["read", "append"]
    ) -> None:
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

    def __init__(self, app: Chronik, auth: Auth | None) -> None:
        super().__init__(app, auth)
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
            self._allow(context, "append")
            stream = StreamId(request.domain, request.aggregate_id, request.tenant)
            events = [event_data_from_wire(e) for e in request.events]
            result = await self.app.store.append(stream, events, expected_from_wire(request))
            return pb.AppendResponse(
                first_sequence=result.first_sequence,
                last_sequence=result.last_sequence,
                position=str(result.position),
                positions=[str(p) for p in result.positions],
            )

        return await self._guarded(context, call)

    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            self._allow(context, "read")
            stream = StreamId(request.domain, request.aggregate_id, request.tenant)
            start = request.from_sequence if request.HasField("from_sequence") else None
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
                after=position_from_wire(request.after),
                domains=list(request.domains) or None,
                types=list(request.types) or None,
                limit=request.limit or None,
                backward=request.backward,
                before=position_from_wire(request.before),
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
                position_from_wire(request.after),
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
            if pending is not None and not pending.done():
                pending.cancel()
            self.subscriptions.discard(sub)


class GrpcServer:
    """Serves one Chronik app over gRPC; ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        app: Chronik,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        auth: Auth | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        projections: Sequence[Projection] = (),
    ) -> None:
        self.app = app
        self.runner = ProjectionRunner(app.store, projections) if projections else None
        self.host = host
        self.port = port
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self._events: EventStoreService | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> int:
        """Open the app, bind and start serving; returns the bound port (``port=0``: any free)."""
        await self.app.open()
        server = grpc.aio.server(options=channel_options(self.max_message_bytes))
        rpc.add_CommandGatewayServicer_to_server(CommandGatewayService(self.app, self.auth), server)
        self._events = EventStoreService(self.app, self.auth)
        rpc.add_EventStoreServicer_to_server(self._events, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [
            pb.DESCRIPTOR.services_by_name["CommandGateway"].full_name,
            pb.DESCRIPTOR.services_by_name["EventStore"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if not bound:
            raise ChronikError(f"cannot listen on {self.host}:{self.port}")
        self.port = bound
        await server.start()
        for name in ["", *names[:2]]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        if self.runner is not None:
            await self.runner.start()
        log.info("gRPC listening on %s:%s", self.host, bound)
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
