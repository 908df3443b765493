"""What the Python client (``chronik.client``) reads off the wire: the chronik error a failed
call stands for (``error_from_status``), and a subscription that reconnects
(``RemoteSubscription``)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Protocol, Self

import grpc

from chronik import errors
from chronik.dcb import Query
from chronik.errors import ChronikError
from chronik.messages import Position, RecordedEvent
from chronik.server.limits import RETRY_AFTER_METADATA
from chronik.server.status import grpc_error_class
from chronik.server.wire import (
    ERROR_DATA_KEY,
    ERROR_KEY,
    error_data_from_wire,
    event_from_wire,
    query_to_wire,
)
from chronik.v1 import chronik_pb2 as pb

__all__ = [
    "RemoteSubscription",
    "SubscribingClient",
    "error_from_status",
    "retry_hint",
    "retryable",
]


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in exc.trailing_metadata() or ():
        found[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
    return found


def error_from_status(exc: grpc.aio.AioRpcError) -> ChronikError:
    """The chronik error a failed call stands for (``chronik.server.status``): the class the
    server named, rebuilt with the fields it sent; else the class of the status code."""
    trailers = _trailers(exc)
    name, code = trailers.get(ERROR_KEY, ""), exc.code().name
    cls = grpc_error_class(code, name)
    message = exc.details() or code
    data = error_data_from_wire(trailers[ERROR_DATA_KEY]) if ERROR_DATA_KEY in trailers else {}
    if cls is errors.MessageTooLarge:
        message += " (a server's limit is its grpc.max_message_bytes)"
    elif exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{message}: no answer in time (the outcome is unknown; retrying is safe)"
    if cls is errors.CommandRejected and "reason" not in data:
        data["reason"] = message
    return cls.from_data(message, data)


def retryable(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE, unless the server named a remote service it already retried itself."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return _trailers(exc).get(ERROR_KEY) != "ServiceUnavailable"


def retry_hint(exc: grpc.aio.AioRpcError) -> float | None:
    """The seconds a server at one of its limits asked to wait before retrying
    (RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer: nothing was done), else None."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    value = _trailers(exc).get(RETRY_AFTER_METADATA, "")
    return int(value) / 1000 if value.isascii() and value.isdigit() else None


class SubscribingClient(Protocol):
    """What a RemoteSubscription needs of its client (``chronik.client.Client``)."""

    address: str

    @property
    def closed(self) -> bool:
        """Whether the client was closed."""

    def open_subscription(self, request: pb.SubscribeRequest) -> Any:
        """Start an EventStore.Subscribe call (raises if the client is closed)."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect number ``attempt``."""


class RemoteSubscription:
    """Events from a server's EventStore.Subscribe; iterate it with ``async for``.

    ``position`` is that of the last event delivered (where it resumes), ``caught_up`` whether
    the server said the stored events are exhausted (since the last connection), and
    ``reconnects`` how often it had to call again. ``aclose()`` (or ``async with``) ends it.
    """

    def __init__(
        self,
        client: SubscribingClient,
        after: Position | None,
        domains: list[str],
        types: list[str],
        *,
        reconnect: bool,
        query: Query | None = None,
    ) -> None:
        self.client = client
        self.position = after
        self.domains = domains
        self.types = types
        self.query = query
        self.reconnect = reconnect
        self.caught_up = False
        self.reconnects = 0
        self._call: Any = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent:
        attempt = 0
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                request = pb.SubscribeRequest(
                    after="" if self.position is None else str(self.position),
                    domains=self.domains,
                    types=self.types,
                    query=None if self.query is None else query_to_wire(self.query),
                )
                self._call = self.client.open_subscription(request)
            try:
                item = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                self._call = None
                if self.client.closed:
                    raise StopAsyncIteration from None
                if not self.reconnect or exc.code() != grpc.StatusCode.UNAVAILABLE:
                    self._closed = True
                    raise error_from_status(exc) from None
            else:
                if item is not grpc.aio.EOF:
                    if item.HasField("event"):
                        event = event_from_wire(item.event)
                        self.position = event.position
                        return event
                    self.caught_up = True
                    attempt = 0  # connected and caught up: the next outage starts afresh
                    continue
                self._call = None  # the server ended the stream: it is stopping
                if not self.reconnect:
                    self._closed = True
                    raise StopAsyncIteration
            attempt += 1
            self.reconnects += 1
            self.caught_up = False
            await asyncio.sleep(self.client.delay(attempt))

    async def aclose(self) -> None:
        """Stop: cancel the call; iteration ends."""
        self._closed = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "live" if self.caught_up else "catching up"
        return (
            f"<RemoteSubscription {self.client.address} {state}, after {self.position}, "
            f"{self.reconnects} reconnects>"
        )
