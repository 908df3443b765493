"""The gRPC EventStore service: Append and AppendTagged (raw appends, off unless enabled),
ReadStream, ReadAll, ReadQuery (DCB) and Subscribe on the app's store.

Raw appends write events with no business logic in between, so both are refused
(PERMISSION_DENIED) unless the server enables them (``GrpcServer(raw_append=True)``, config
``grpc.raw_append: true``); with auth they need the ``append`` right, and events are checked
against the registered schemas (``chronik.server.edge_input.check_raw_events``). A failed
append condition is ABORTED with ``AppendConditionFailed`` (its item and position in the error
trailers); nothing is written then.

Every call stays within the key's tenant scope (``chronik.server.tenancy``): appends to
another tenant are PERMISSION_DENIED, reading another tenant's stream is NOT_FOUND, and
ReadAll, ReadQuery, Subscribe and ListStreams carry the scope's tenant's events only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from chronik.app import Chronik
from chronik.errors import ChronikError, PermissionDenied
from chronik.messages import RecordedEvent, StreamId
from chronik.server import tenancy
from chronik.server.auth import Auth
from chronik.server.edge_input import check_raw_events, condition_of
from chronik.server.grpc_admin import list_streams
from chronik.server.grpc_edge import (
    Service,
    abort_call,
    check_raw_append,
    check_sequence,
    parse_position,
)
from chronik.server.wire import (
    event_data_from_wire,
    event_to_wire,
    expected_from_wire,
    query_from_wire,
)
from chronik.store.subscription import Subscription
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["CAUGHT_UP_POLL", "RAW_APPEND_OFF", "EventStoreService"]

CAUGHT_UP_POLL: Final = 0.05
RAW_APPEND_OFF: Final = (
    "raw appends are disabled: EventStore.Append and AppendTagged bypass the business logic; "
    "enable them with `grpc.raw_append: true` in the config (GrpcServer(raw_append=True))"
)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's exception, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class EventStoreService(Service, rpc.EventStoreServicer):
    """Append, AppendTagged, ReadStream, ReadAll, ReadQuery and Subscribe on the app's store."""

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
            scope = self._allow(context, "append")  # credentials first, then the switch
            if not self.raw_append:
                raise PermissionDenied(RAW_APPEND_OFF)
            tenant = scope.write_tenant(request.tenant)
            stream = StreamId(request.domain, request.aggregate_id, tenant)
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

    async def AppendTagged(
        self, request: pb.AppendTaggedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AppendTaggedResponse:
        async def call() -> pb.AppendTaggedResponse:
            scope = self._allow(context, "append")  # credentials first, then the switch
            if not self.raw_append:
                raise PermissionDenied(RAW_APPEND_OFF)
            tenant = scope.write_tenant(request.tenant)
            domain = request.domain or "dcb"
            events = [event_data_from_wire(e) for e in request.events]
            condition = None
            if request.HasField("condition"):
                query = query_from_wire(request.condition.query, "condition.query")
                condition = condition_of(query, request.condition.after)
            check_raw_events(self.app, domain, events)
            result = await self.app.store.append_tagged(
                events, condition, domain=domain, tenant=tenant
            )
            return pb.AppendTaggedResponse(
                positions=[str(p) for p in result.positions], position=str(result.position)
            )

        return await self._guarded(context, call)

    async def ReadQuery(
        self, request: pb.ReadQueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            scope = self._allow(context, "read")
            query = query_from_wire(request.query)
            after = parse_position(request.after, "after")
            async for event in tenancy.read_query(
                self.app.store, scope, query, after, request.limit or None, request.backward
            ):
                yield event_to_wire(event)
        except (ChronikError, Exception) as exc:
            await abort_call(context, exc)

    async def ListStreams(
        self, request: pb.ListStreamsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListStreamsResponse:
        async def call() -> pb.ListStreamsResponse:
            scope = self._allow(context, "read")
            return await list_streams(self.app, request, scope)

        return await self._guarded(context, call)

    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            scope = self._allow(context, "read")
            stream = StreamId(request.domain, request.aggregate_id, request.tenant)
            stream = scope.read_stream(stream)  # empty tenant: the key's own
            start = None
            if request.HasField("from_sequence"):
                start = check_sequence(request.from_sequence, "from_sequence")
            async for event in self.app.store.read_stream(
                stream, start, request.backward, request.limit or None
            ):
                yield event_to_wire(event)
        except (ChronikError, Exception) as exc:
            await abort_call(context, exc)

    async def ReadAll(
        self, request: pb.ReadAllRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        try:
            scope = self._allow(context, "read")
            async for event in tenancy.read_all(
                self.app.store,
                scope,
                after=parse_position(request.after, "after"),
                domains=list(request.domains) or None,
                types=list(request.types) or None,
                limit=request.limit or None,
                backward=request.backward,
                before=parse_position(request.before, "before"),
            ):
                yield event_to_wire(event)
        except (ChronikError, Exception) as exc:
            await abort_call(context, exc)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            scope = self._allow(context, "read")
            store = self.app.store
            sub = store.subscribe(
                parse_position(request.after, "after"),
                domains=list(request.domains) or None,
                types=list(request.types) or None,
                query=query_from_wire(request.query) if request.HasField("query") else None,
                tenant=scope.filter,
            )
        except (ChronikError, Exception) as exc:
            await abort_call(context, exc)
            return
        if self.stopping or scope.denied:  # a key without tenant: nothing
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
                        await abort_call(context, exc)
                        return
                    yield pb.SubscribeResponse(event=event_to_wire(event))
        finally:
            if pending is not None:  # its end (StopAsyncIteration on close) is retrieved
                pending.cancel()
                pending.add_done_callback(_retrieve)
            self.subscriptions.discard(sub)
