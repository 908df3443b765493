"""Business logic in another process, in any language: a DomainModel that calls BusinessLogic.

The bus loads the aggregate as usual (the latest snapshot, if the service ever returned one, and
the events after it, as stored: no registry is involved), and this model sends them with the
command as a ContextualCommand. The service answers with events to append or a rejection. Every
call has a deadline; UNAVAILABLE and DEADLINE_EXCEEDED are retried a bounded number of times,
then the command fails with ServiceUnavailable and nothing is appended.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Final

import grpc
import msgspec

from chronik.client_stream import error_from_status
from chronik.domain_model import DomainModel, check_domain
from chronik.errors import (
    ChronikError,
    CommandRejected,
    HandlerError,
    NotFound,
    ServiceUnavailable,
    UnknownCommandType,
    ValidationError,
)
from chronik.messages import Command, EventData, RecordedEvent, Snapshot, StreamId
from chronik.projections.projection import ErrorPolicy, Projection
from chronik.projections.readmodel import ReadModel
from chronik.reactions import Dispatch, reaction
from chronik.server.wire import (
    command_from_wire,
    command_to_wire,
    event_data_from_wire,
    event_to_wire,
)
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = [
    "RemoteModel",
    "RemoteState",
    "channel_options",
    "remote_projector",
    "remote_saga",
]

REMOTE_POLICY: Final = ErrorPolicy(retries=12, backoff=0.1, max_backoff=5.0, then="park")

MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
_RETRYABLE: Final = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _service_error(command: Command, exc: grpc.aio.AioRpcError) -> ChronikError:
    """What a failed BusinessLogic call means for the command: the error the service named
    (or its code's class, ``chronik.server.status``) when it is an answer about the command (a
    rejection, bad input, not found); a nameless NOT_FOUND, or a service that does not
    implement BusinessLogic, is UnknownCommandType (the domain routed here); anything else is
    a HandlerError: the business logic failed and nothing was stored."""
    err = error_from_status(exc)
    unnamed_not_found = type(err) is NotFound
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED or unnamed_not_found:
        return UnknownCommandType(command.domain, command.type)
    if isinstance(err, CommandRejected | ValidationError | NotFound):
        return err
    cause = RuntimeError(f"{exc.code().name}: {exc.details()}")
    return HandlerError(command.domain, command.type, cause)


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC options bounding message sizes both ways."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class RemoteState(msgspec.Struct):
    """What a remote domain's aggregate is made of: a snapshot and the events after it."""

    snapshot: Snapshot | None = None
    events: list[RecordedEvent] = msgspec.field(default_factory=list)
    version: int | None = None
    new_snapshot: pb.Snapshot | None = None


class RemoteModel(DomainModel):
    """The business logic of ``domain`` served at ``address`` (host:port) over gRPC."""

    typed_events = False
    cacheable = False

    def __init__(
        self,
        domain: str,
        address: str,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        check_domain(domain)
        self.domain = domain
        self.address = address
        self.timeout = timeout
        self.attempts = attempts
        self.commands = None
        self.snapshots = None
        self.state_type = f"{domain}.remote"
        self.state_version = 1
        self._options = channel_options(max_message_bytes)
        self._channel: grpc.aio.Channel | None = None
        self._stub: rpc.BusinessLogicStub | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self) -> rpc.BusinessLogicStub:
        if self._stub is None:
            # a subchannel of its own: a new channel connects at once, where a shared one would
            # wait out gRPC's reconnect backoff (up to 120 s) after the service came back
            options = [*self._options, ("grpc.use_local_subchannel_pool", 1)]
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
            self._stub = rpc.BusinessLogicStub(self._channel)
        return self._stub

    def _reconnect(self, stub: rpc.BusinessLogicStub) -> None:
        """Drop the channel behind ``stub`` (its calls in flight get the timeout to finish)."""
        if self._stub is not stub or self._channel is None:
            return  # another call dropped it already
        channel, self._channel, self._stub = self._channel, None, None
        task = asyncio.get_running_loop().create_task(channel.close(grace=self.timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the channel to the service."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- the model ----------------------------------------------------------------------------

    def parse(self, command: Command) -> Command:
        payload = command.payload
        if not isinstance(payload, bytes | bytearray):
            try:
                payload = msgspec.json.encode(payload)
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"payload is not JSON-encodable: {exc}", field="payload"
                ) from None
            return msgspec.structs.replace(command, payload=payload)
        return command

    def initial(self, aggregate_id: str) -> RemoteState:
        return RemoteState()

    def evolve(self, state: RemoteState, event: RecordedEvent) -> RemoteState:
        state.events.append(event)
        state.version = event.sequence
        return state

    def decode_state(self, snapshot: Snapshot) -> RemoteState:
        return RemoteState(snapshot, [], snapshot.sequence)

    def encode_state(self, state: Any) -> bytes:
        raise NotImplementedError("snapshots of remote domains come from the service")

    async def decide(self, command: Command, state: RemoteState) -> list[EventData]:  # type: ignore[override]
        request = pb.ContextualCommand(
            command=command_to_wire(command, bytes(command.payload)),
            events=[event_to_wire(e) for e in state.events],
            version=-1 if state.version is None else state.version,
        )
        snap = state.snapshot
        if snap is not None:
            request.snapshot.CopyFrom(
                pb.Snapshot(
                    sequence=snap.sequence,
                    type=snap.type,
                    schema_version=snap.schema_version,
                    state=snap.state,
                )
            )
        response = await self._call(command, request)
        if response.rejection:
            raise CommandRejected(response.rejection)
        state.new_snapshot = response.snapshot if response.HasField("snapshot") else None
        try:
            return [event_data_from_wire(e) for e in response.events]
        except ValidationError as exc:
            raise HandlerError(command.domain, command.type, exc) from exc

    async def _call(self, command: Command, request: pb.ContextualCommand) -> pb.BusinessResponse:
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(self.attempts):
            stub = self._client()
            try:
                response: pb.BusinessResponse = await stub.Handle(request, timeout=self.timeout)
                return response
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in _RETRYABLE:
                    last = exc
                    if code == grpc.StatusCode.UNAVAILABLE:
                        self._reconnect(stub)  # the next attempt connects afresh
                    await asyncio.sleep(min(1.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
                    continue
                raise _service_error(command, exc) from None
        detail = last.details() if last is not None else ""
        raise ServiceUnavailable(
            f"business logic of {command.domain!r} at {self.address} is unavailable "
            f"after {self.attempts} attempts: {detail}"
        )

    def settle(self, state: RemoteState, events: list[Any]) -> RemoteState:
        return state

    def snapshot_after(self, state: RemoteState, stream: StreamId, version: int) -> Snapshot | None:
        snap = state.new_snapshot
        if snap is None or not snap.type:
            return None
        return Snapshot(
            stream,
            version,
            snap.type,
            snap.schema_version or 1,
            bytes(snap.state),
        )


# --- projectors and sagas in other processes --------------------------------------------------


class _Remote:
    """A lazily opened channel to one service."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.channel: grpc.aio.Channel | None = None

    def open(self) -> grpc.aio.Channel:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.address, options=channel_options())
        return self.channel

    def unavailable(self, what: str, exc: grpc.aio.AioRpcError) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"{what} at {self.address} failed: {exc.code().name} {exc.details() or ''}".strip()
        )


def _book(event: RecordedEvent) -> pb.EventBook:
    s = event.stream
    return pb.EventBook(
        domain=s.domain, aggregate_id=s.aggregate_id, tenant=s.tenant, events=[event_to_wire(event)]
    )


def remote_projector(
    name: str,
    address: str,
    types: list[str],
    *,
    timeout: float = 5.0,
    policy: ErrorPolicy | None = None,
) -> Projection:
    """A projection that pushes each event, in order per stream, to ``Projector.Project``.

    Delivery is at least once (the event id is the service's idempotency key); a service that
    is down is retried with backoff, then its stream parks until the dead letter is retried.
    """
    remote = _Remote(address, timeout)
    projection = Projection(name, policy=policy or REMOTE_POLICY)

    async def push(event: RecordedEvent, rm: ReadModel) -> None:
        try:
            await rpc.ProjectorStub(remote.open()).Project(_book(event), timeout=remote.timeout)
        except grpc.aio.AioRpcError as exc:
            raise remote.unavailable(f"projector {name}", exc) from None

    projection.on(*types)(push)
    return projection


def remote_saga(
    name: str,
    address: str,
    types: list[str],
    dispatch: Dispatch,
    *,
    timeout: float = 5.0,
    policy: ErrorPolicy | None = None,
) -> Projection:
    """A reaction whose commands come from ``Saga.Handle`` in another process."""
    remote = _Remote(address, timeout)

    async def ask(event: RecordedEvent) -> list[Command]:
        try:
            response: pb.SagaResponse = await rpc.SagaStub(remote.open()).Handle(
                _book(event), timeout=remote.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise remote.unavailable(f"saga {name}", exc) from None
        return [command_from_wire(c) for c in response.commands]

    return reaction(name, types, ask, dispatch, policy=policy or REMOTE_POLICY)
