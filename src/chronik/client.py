"""The Python client of a chronik server (gRPC): ``chronik.sdk.Client``.

Everything the gRPC API offers: ``dispatch`` (CommandGateway.Handle), ``append`` and
``append_tagged`` (DCB; where the server enables raw appends), ``read_stream``, ``read_all``,
``read_query`` (DCB), ``head``, ``stream_version``,
``subscribe``, ``list_streams``, ``describe`` (the schema catalog), the projection calls
(``projections``, ``pause``, ``rebuild``, ...; see chronik.client_admin) and ``health``.
Failures raise the chronik error the server raised, rebuilt with its fields
(``WrongExpectedVersion.expected``, ``CommandRejected.reason``,
``AppendConditionFailed.item`` / ``.position``, ...).

Idempotent calls are retried on ``UNAVAILABLE`` with jittered exponential backoff within the
call's timeout: a command gets its id before the first try and events theirs, so a retry never
applies twice; reads resume after the last event they delivered. A subscription reconnects
whenever the server goes away (``UNAVAILABLE``, or a stream it ended while stopping) and
resumes after the last event it delivered.

The API calls live here and in ``chronik.client_admin``; the channel, credentials, call loops
and lifecycle in ``chronik.client_channel`` (``Client`` is ``AdminCalls`` over a
``ClientChannel``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2

from chronik.client_admin import AdminCalls
from chronik.client_stream import RemoteSubscription, error_from_status
from chronik.client_tls import ClientTLS
from chronik.commands import CommandResult
from chronik.dcb import AppendCondition, Query
from chronik.errors import InvalidExpectedVersion, ValidationError
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
from chronik.server.wire import (
    command_to_wire,
    event_data_to_wire,
    event_from_wire,
    query_to_wire,
)
from chronik.v1 import chronik_pb2 as pb

__all__ = ["Client", "ClientTLS", "RemoteSubscription", "error_from_status"]

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
    seconds, doubling up to ``max_backoff``, with jitter; a server at its limits (``Overloaded``,
    ``RateLimited``) is tried again after the wait it named. ``tls=ClientTLS(ca=..., cert=...,
    key=...)`` connects over TLS (with a client certificate: mutual TLS).
    Use as ``async with Client(...)``.
    """

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

    async def append_tagged(
        self,
        events: Sequence[EventData],
        condition: AppendCondition | None = None,
        domain: str = "dcb",
        *,
        tenant: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AppendResult:
        """Append tagged events atomically unless ``condition`` fails (EventStore.AppendTagged).

        Raises AppendConditionFailed (with the query ``item`` and the ``position`` of the first
        matching event; nothing written) when an event matching the condition's query is
        stored after its ``after``. Servers refuse it unless enabled (``grpc.raw_append``):
        PermissionDenied. Retried safely: the events keep their ids, and a retry of an append
        that committed answers its original positions.
        """
        if condition is not None and not isinstance(condition, AppendCondition):
            raise ValidationError(
                f"condition must be an AppendCondition or None, got {condition!r}",
                field="condition",
            )
        events = list(events)
        request = pb.AppendTaggedRequest(
            events=[event_data_to_wire(e) for e in events], domain=domain, tenant=tenant
        )
        if condition is not None:
            request.condition.query.CopyFrom(query_to_wire(condition.fail_if_events_match))
            request.condition.after = "" if condition.after is None else str(condition.after)
        response: pb.AppendTaggedResponse = await self._unary(
            lambda left: self._events.AppendTagged(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        positions = tuple(Position.parse(p) for p in response.positions)
        first = events[0].event_id if events else ""
        return AppendResult(
            StreamId(domain, first, tenant), 0, 0, Position.parse(response.position), positions
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

    def read_query(
        self,
        query: Query,
        after: Position | None = None,
        limit: int | None = None,
        backward: bool = False,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events ``query`` matches in the global order (EventStore.ReadQuery), after
        ``after`` (before it with ``backward``, newest first), at most ``limit``. The position
        of the last event read is a safe ``AppendCondition.after`` for a decision made from
        them."""
        if not isinstance(query, Query):
            raise ValidationError(f"expected a chronik.Query, got {query!r}", field="query")
        request = pb.ReadQueryRequest(
            query=query_to_wire(query),
            after="" if after is None else str(after),
            limit=limit or 0,
            backward=backward,
        )

        def resume(req: pb.ReadQueryRequest, last: RecordedEvent) -> pb.ReadQueryRequest | None:
            nxt = pb.ReadQueryRequest()
            nxt.CopyFrom(req)
            nxt.after = str(last.position)  # backward too: "after" bounds from above then
            fewer: pb.ReadQueryRequest | None = _fewer(nxt, req.limit)
            return fewer

        return self._read(self._events.ReadQuery, request, resume, timeout)

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
        query: Query | None = None,
    ) -> RemoteSubscription:
        """Every event after ``after`` (of ``domains`` / ``types`` / the DCB ``query`` when
        given): the stored ones, then live ones, until the caller stops. With ``reconnect``, a
        server that goes away is called again with backoff and the subscription resumes after
        the last event it delivered; without, it ends (or raises) when the server does."""
        return RemoteSubscription(
            self, after, list(domains), list(types), reconnect=reconnect, query=query
        )

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


def _fewer(request: Any, limit: int) -> Any:
    """``request`` asking for one event fewer than ``limit`` (None: none left); 0: no limit."""
    if limit:
        if limit == 1:
            return None
        request.limit = limit - 1
    return request
