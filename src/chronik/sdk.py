"""Write business logic as a gRPC service, and call a chronik server, in a few lines of Python.

A service: the same Decider or Aggregate class you would run in-process::

    server, port = await chronik.sdk.serve_business_logic(customer, registry, "127.0.0.1:50061")

A client::

    async with chronik.sdk.Client("127.0.0.1:50051") as client:
        result = await client.dispatch(chronik.Command(domain="customer", ...))

Needs the ``grpc`` extra.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import msgspec

from chronik import errors
from chronik.aggregate import Aggregate, AggregateModel, DomainModel
from chronik.codec import EventRegistry
from chronik.commands import CommandResult
from chronik.errors import ChronikError, CommandRejected
from chronik.messages import Command, Position, RecordedEvent, Snapshot, StreamId
from chronik.server.grpc import ERROR_KEY
from chronik.server.grpc_edge import EdgeInterceptor, bind_error, report_bug, status_for
from chronik.server.remote import channel_options
from chronik.server.wire import command_from_wire, command_to_wire, event_from_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["BusinessLogicService", "Client", "serve_business_logic"]

log = logging.getLogger("chronik.sdk")


class BusinessLogicService(rpc.BusinessLogicServicer):
    """Serves a DomainModel (Decider or Aggregate class) as chronik's BusinessLogic service."""

    def __init__(self, model: DomainModel | type[Aggregate], registry: EventRegistry) -> None:
        if isinstance(model, type) and issubclass(model, Aggregate):
            model = AggregateModel(model)
        self.model = model
        self.registry = registry

    async def Handle(
        self, request: pb.ContextualCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BusinessResponse:
        model, registry = self.model, self.registry
        try:
            command = model.parse(command_from_wire(request.command))
            stream = command.stream
            state = model.initial(stream.aggregate_id)
            snap_seq: int | None = None
            if request.HasField("snapshot"):
                s = request.snapshot
                if (s.type, s.schema_version) == (model.state_type, model.state_version):
                    state = model.decode_state(
                        Snapshot(stream, s.sequence, s.type, s.schema_version, s.state)
                    )
                    snap_seq = s.sequence
            for event in request.events:
                state = model.evolve(state, registry.decode(event_from_wire(event)))
            events = model.decide(command, state)
            state = model.settle(state, events)
            response = pb.BusinessResponse(
                events=[
                    pb.NewEvent(
                        type=registry.name_of(e),
                        payload=msgspec.json.encode(e),
                        schema_version=registry.version_of(registry.name_of(e)),
                    )
                    for e in events
                ]
            )
        except CommandRejected as exc:
            return pb.BusinessResponse(rejection=exc.reason)
        except Exception as exc:
            await _abort(context, exc)
            raise  # pragma: no cover - abort raises
        policy = model.snapshots
        version = request.version + len(events)
        if events and policy is not None and policy.every is not None:
            base = -1 if snap_seq is None else snap_seq
            if version - base >= policy.every:
                response.snapshot.CopyFrom(
                    pb.Snapshot(
                        type=model.state_type,
                        schema_version=model.state_version,
                        state=model.encode_state(state),
                    )
                )
        return response


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if not isinstance(exc, ChronikError):
        report_bug(exc, "business logic")
    context.set_trailing_metadata(((ERROR_KEY, type(exc).__name__),))
    await context.abort(status_for(exc), str(exc) if isinstance(exc, ChronikError) else repr(exc))


async def serve_business_logic(
    model: DomainModel | type[Aggregate],
    registry: EventRegistry,
    address: str = "127.0.0.1:0",
) -> tuple[grpc.aio.Server, int]:
    """Start a BusinessLogic server for ``model``; returns it and its port (stop it when done).

    A malformed request is INVALID_ARGUMENT; PortInUse if another process holds the port.
    """
    options: list[tuple[str, Any]] = [*channel_options(), ("grpc.so_reuseport", 0)]
    server = grpc.aio.server(interceptors=[EdgeInterceptor()], options=options)
    rpc.add_BusinessLogicServicer_to_server(BusinessLogicService(model, registry), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.50 raises where older versions returned 0
        port = 0
    if not port:
        host, _, number = address.rpartition(":")
        raise bind_error("business logic gRPC", host, int(number) if number.isdigit() else 0)
    await server.start()
    return server, port


# --- the client -------------------------------------------------------------------------------

_BY_STATUS: dict[grpc.StatusCode, type[ChronikError]] = {
    grpc.StatusCode.FAILED_PRECONDITION: errors.CommandRejected,
    grpc.StatusCode.ABORTED: errors.ConcurrencyError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.ValidationError,
    grpc.StatusCode.NOT_FOUND: errors.UnknownDomain,
    grpc.StatusCode.UNAVAILABLE: errors.ServiceUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: errors.DuplicateEventError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.MessageTooLarge,
    grpc.StatusCode.DATA_LOSS: errors.DeserializationError,
}


def error_from_status(exc: grpc.aio.AioRpcError) -> ChronikError:
    """The chronik error a failed call stands for (the class named by the server if known)."""
    name = ""
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_KEY:
            name = value.decode() if isinstance(value, bytes) else value
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if cls is None:
        cls = _BY_STATUS.get(exc.code(), ChronikError)
    message = exc.details() or exc.code().name
    if cls is errors.MessageTooLarge:
        message += " (a server's limit is its grpc.max_message_bytes)"
    err: ChronikError = cls.__new__(cls)
    Exception.__init__(err, message)
    if isinstance(err, CommandRejected):
        err.reason = message
    return err


class Client:
    """A client of a chronik server's CommandGateway and EventStore."""

    def __init__(self, address: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        self._channel = grpc.aio.insecure_channel(address, options=channel_options())
        self._gateway = rpc.CommandGatewayStub(self._channel)
        self._events = rpc.EventStoreStub(self._channel)

    async def dispatch(self, command: Command) -> CommandResult:
        """Send a command; raises the chronik error the server answered with."""
        try:
            response = await self._gateway.Handle(
                command_to_wire(command), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(exc) from None
        events = [event_from_wire(e) for e in response.events]
        stream = StreamId(command.domain, command.aggregate_id, command.tenant)
        version = None if response.version < 0 else response.version
        return CommandResult(response.command_id, stream, events, version, response.duplicate)

    async def read_stream(
        self, stream: StreamId, from_sequence: int | None = None, limit: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """The events of one stream."""
        request = pb.ReadStreamRequest(
            domain=stream.domain,
            aggregate_id=stream.aggregate_id,
            tenant=stream.tenant,
            limit=limit or 0,
        )
        if from_sequence is not None:
            request.from_sequence = from_sequence
        try:
            async for event in self._events.ReadStream(request, metadata=self._metadata):
                yield event_from_wire(event)
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(exc) from None

    async def subscribe(
        self,
        after: Position | None = None,
        domains: Sequence[str] = (),
        types: Sequence[str] = (),
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after``: catch up, then live (until the caller stops)."""
        request = pb.SubscribeRequest(
            after=str(after) if after is not None else "", domains=domains, types=types
        )
        try:
            async for item in self._events.Subscribe(request, metadata=self._metadata):
                if item.HasField("event"):
                    yield event_from_wire(item.event)
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(exc) from None

    async def close(self) -> None:
        """Close the channel."""
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
