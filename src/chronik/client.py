"""The Python client of a chronik server (gRPC): ``chronik.sdk.Client``.

Everything the gRPC API offers: ``dispatch`` (CommandGateway.Handle), ``append`` (where the
server enables raw appends), ``read_stream``, ``read_all``, ``head``, ``stream_version``,
``subscribe``, ``list_streams``, ``describe`` (the schema catalog), the projection calls
(``projections``, ``pause``, ``rebuild``, ...; see chronik.client_admin) and ``health``.
Failures raise the chronik error the server raised, rebuilt with its fields
(``WrongExpectedVersion.expected``, ``CommandRejected.reason``, ...).

Idempotent calls are retried on ``UNAVAILABLE`` with jittered exponential backoff within the
call's timeout: a command gets its id before the first try and events theirs, so a retry never
applies twice; reads resume after the last event they delivered. A subscription reconnects
whenever the server goes away (``UNAVAILABLE``, or a stream it ended while stopping) and
resumes after the last event it delivered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chronik import errors
from chronik.client_admin import AdminCalls
from chronik.client_stream import RemoteSubscription, error_from_status, retryable
from chronik.commands import CommandResult
from chronik.errors import ConfigurationError, InvalidExpectedVersion
from chronik.messages import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Command,
    EventData,
    Expected,
    ExpectedState,
    Position,
    RecordedEvent,
    StreamId,
    new_event_id,
)
from chronik.server.remote import channel_options
from chronik.server.wire import command_to_wire, event_data_to_wire, event_from_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["Client", "RemoteSubscription", "error_from_status"]

T = TypeVar("T")
_EXPECTED: Final = {
    ANY: pb.EXPECTED_ANY,
    NO_STREAM: pb.EXPECTED_NO_STREAM,
    STREAM_EXISTS: pb.EXPECTED_STREAM_EXISTS,
}


class Client(AdminCalls):
    """A client of a chronik server's CommandGateway, EventStore, Catalog, Projections and
    health services.

    ``api_key`` is sent as ``x-api-key``, ``token`` as ``authorization: Bearer``. ``timeout``
    (seconds) bounds each unary call, retries included (each method takes its own ``timeout``;
    reads have none unless given);
    ``retries`` is how often an idempotent call is retried on UNAVAILABLE, waiting ``backoff``
    seconds, doubling up to ``max_backoff``, with jitter. Use as ``async with Client(...)``.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if api_key and token:
            raise ConfigurationError("Client: give api_key or token, not both")
        for name, value in (
            ("timeout", timeout),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
        ):
            if not value > 0:
                raise ConfigurationError(f"Client {name}: must be > 0, got {value!r}")
        if retries < 0:
            raise ConfigurationError(f"Client retries: must be >= 0, got {retries!r}")
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._auth = "api key" if api_key else "bearer token" if token else "no auth"
        self._metadata: tuple[tuple[str, str], ...] = ()
        if api_key:
            self._metadata = (("x-api-key", api_key),)
        elif token:
            self._metadata = (("authorization", f"Bearer {token}"),)
        reconnect_ms = int(backoff * 1000)
        options: list[tuple[str, Any]] = [
            *channel_options(),  # reconnect to a restarted server about as fast as we retry
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", int(max_backoff * 1000)),
        ]
        self._channel = grpc.aio.insecure_channel(address, options=options)
        self._gateway = rpc.CommandGatewayStub(self._channel)  # type: ignore[no-untyped-call]
        self._events = rpc.EventStoreStub(self._channel)  # type: ignore[no-untyped-call]
        self._catalog = rpc.CatalogStub(self._channel)  # type: ignore[no-untyped-call]
        self._projections = rpc.ProjectionsStub(self._channel)  # type: ignore[no-untyped-call]
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    # --- commands and appends -----------------------------------------------------------------

    async def dispatch(
        self,
        command: Command,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> CommandResult:
        """Send a command; its events and the aggregate's version, or the chronik error the
        server raised. A command without ``command_id`` gets one (set on it) before the first
        try, so a retry, or dispatching the same object again, never applies it twice."""
        if not command.command_id:
            command.command_id = new_event_id()
        request = command_to_wire(command)
        response: pb.CommandResponse = await self._unary(
            lambda left: self._gateway.Handle(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        events = [event_from_wire(e) for e in response.events]
        stream = StreamId(command.domain, command.aggregate_id, command.tenant)
        version = None if response.version < 0 else response.version
        return CommandResult(response.command_id, stream, events, version, response.duplicate)

    async def append(
        self,
        stream: StreamId,
        events: Sequence[EventData],
        expected: Expected = ANY,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AppendResult:
        """Append events to one stream with no business logic in between (EventStore.Append).

        Servers refuse it unless enabled (``grpc.raw_append``): PermissionDenied. Retried
        safely: each event keeps its ``event_id``, and the store stores an id once.
        """
        request = pb.AppendRequest(
            domain=stream.domain,
            aggregate_id=stream.aggregate_id,
            tenant=stream.tenant,
            events=[event_data_to_wire(e) for e in events],
        )
        if isinstance(expected, ExpectedState):
            request.state = _EXPECTED[expected]
        elif isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
            request.sequence = expected
        else:
            raise InvalidExpectedVersion(
                f"expected: {expected!r} is not ANY, NO_STREAM, STREAM_EXISTS or a sequence >= 0",
                field="expected",
            )
        response: pb.AppendResponse = await self._unary(
            lambda left: self._events.Append(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        position = Position.parse(response.position) if response.position else Position(0)
        return AppendResult(
            stream,
            response.first_sequence,
            response.last_sequence,
            position,
            tuple(Position.parse(p) for p in response.positions),
        )

    # --- reads ----------------------------------------------------------------------------------

    def read_stream(
        self,
        stream: StreamId,
        from_sequence: int | None = None,
        *,
        backward: bool = False,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events of one stream, from ``from_sequence`` (inclusive), oldest first or
        (``backward``) newest first, at most ``limit``. Reads have no deadline unless given
        ``timeout``; one cut short by UNAVAILABLE resumes after the last event it delivered."""
        request = pb.ReadStreamRequest(
            domain=stream.domain,
            aggregate_id=stream.aggregate_id,
            tenant=stream.tenant,
            backward=backward,
            limit=limit or 0,
        )
        if from_sequence is not None:
            request.from_sequence = from_sequence

        def resume(req: pb.ReadStreamRequest, last: RecordedEvent) -> pb.ReadStreamRequest | None:
            if backward and last.sequence == 0:
                return None
            nxt = pb.ReadStreamRequest()
            nxt.CopyFrom(req)
            nxt.from_sequence = last.sequence - 1 if backward else last.sequence + 1
            fewer: pb.ReadStreamRequest | None = _fewer(nxt, req.limit)
            return fewer

        return self._read(self._events.ReadStream, request, resume, timeout)

    def read_all(
        self,
        after: Position | None = None,
        *,
        domains: Sequence[str] = (),
        types: Sequence[str] = (),
        limit: int | None = None,
        backward: bool = False,
        before: Position | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Every stored event in global order after ``after`` (and before ``before``), of
        ``domains`` and ``types`` when given, at most ``limit``; newest first if ``backward``."""
        request = pb.ReadAllRequest(
            after="" if after is None else str(after),
            before="" if before is None else str(before),
            domains=list(domains),
            types=list(types),
            limit=limit or 0,
            backward=backward,
        )

        def resume(req: pb.ReadAllRequest, last: RecordedEvent) -> pb.ReadAllRequest | None:
            nxt = pb.ReadAllRequest()
            nxt.CopyFrom(req)
            if backward:
                nxt.before = str(last.position)
            else:
                nxt.after = str(last.position)
            fewer: pb.ReadAllRequest | None = _fewer(nxt, req.limit)
            return fewer

        return self._read(self._events.ReadAll, request, resume, timeout)

    async def head(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> Position | None:
        """The position of the last stored event (None: the store is empty)."""
        async for event in self.read_all(backward=True, limit=1, timeout=timeout):
            return event.position
        return None

    async def stream_version(
        self,
        stream: StreamId,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> int | None:
        """The last sequence of ``stream`` (None: it has no events)."""
        async for event in self.read_stream(stream, backward=True, limit=1, timeout=timeout):
            return event.sequence
        return None

    def subscribe(
        self,
        after: Position | None = None,
        *,
        domains: Sequence[str] = (),
        types: Sequence[str] = (),
        reconnect: bool = True,
    ) -> RemoteSubscription:
        """Every event after ``after`` (of ``domains`` / ``types`` when given): the stored
        ones, then live ones, until the caller stops. With ``reconnect``, a server that goes
        away is called again with backoff and the subscription resumes after the last event
        it delivered; without, it ends (or raises) when the server does."""
        return RemoteSubscription(self, after, list(domains), list(types), reconnect=reconnect)

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> str:
        """The server's health status: ``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN``
        (``service``: "" for the whole server, or e.g. ``chronik.v1.EventStore``)."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply: health_pb2.HealthCheckResponse = await self._unary(
                lambda left: self._health.Check(request, timeout=left, metadata=self._metadata),
                timeout,
                raw=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise error_from_status(exc) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    async def close(self) -> None:
        """Close the channel (ends open subscriptions); further calls raise."""
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        connection = self._channel.get_state().name.lower()
        state = "closed" if self._closed else f"open, {connection}"
        return f"<Client {self.address} {state}, {self._auth}, timeout {self.timeout}s>"

    # --- calls, retries -------------------------------------------------------------------------

    def open_subscription(self, request: pb.SubscribeRequest) -> Any:
        """Start an EventStore.Subscribe call (for RemoteSubscription)."""
        self._check_open()
        return self._events.Subscribe(request, metadata=self._metadata)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ServiceUnavailable(f"the client of {self.address} is closed")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): doubling, capped, jittered."""
        base: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def _retry_wait(
        self, exc: grpc.aio.AioRpcError, attempt: int, deadline: float, *, raw: bool = False
    ) -> None:
        """Wait before another try, or raise (the chronik error) when there is none left."""
        pause = self.delay(attempt)
        if attempt > self.retries or not retryable(exc) or time.monotonic() + pause >= deadline:
            if raw:
                raise exc
            raise error_from_status(exc) from None
        await asyncio.sleep(pause)

    async def _unary(
        self,
        call: Callable[[float], Awaitable[T]],
        seconds: float | None,
        *,
        raw: bool = False,
        once: bool = False,
    ) -> T:
        """Run one unary call within the deadline, retried on UNAVAILABLE unless ``once``."""
        deadline = time.monotonic() + (self.timeout if seconds is None else seconds)
        attempt = 0
        while True:
            self._check_open()
            try:
                return await call(max(0.001, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as exc:
                if once:
                    raise error_from_status(exc) from None
                attempt += 1
                await self._retry_wait(exc, attempt, deadline, raw=raw)

    async def _read(
        self,
        method: Callable[..., Any],
        request: Any,
        resume: Callable[[Any, RecordedEvent], Any],
        seconds: float | None,
    ) -> AsyncIterator[RecordedEvent]:
        deadline = float("inf") if seconds is None else time.monotonic() + seconds
        attempt = 0
        while request is not None:
            self._check_open()
            left = None if seconds is None else max(0.001, deadline - time.monotonic())
            call = method(request, timeout=left, metadata=self._metadata)
            try:
                while True:
                    item = await call.read()
                    if item is grpc.aio.EOF:
                        return
                    event = event_from_wire(item)
                    attempt = 0
                    request = resume(request, event)
                    yield event
            except grpc.aio.AioRpcError as exc:
                attempt += 1
                if request is None:
                    return  # everything asked for was delivered
                await self._retry_wait(exc, attempt, deadline)
            finally:
                call.cancel()


def _fewer(request: Any, limit: int) -> Any:
    """``request`` asking for one event fewer than ``limit`` (None: none left); 0: no limit."""
    if limit:
        if limit == 1:
            return None
        request.limit = limit - 1
    return request
