"""The plumbing under ``chronik.client.Client``: one gRPC channel with its stubs and
credentials, the call loops (a unary call retried within its deadline, a server-streamed read
that resumes where it was cut), the backoff, and the client's lifecycle.

``ClientChannel`` knows no API call: ``chronik.client_admin.AdminCalls`` and
``chronik.client.Client`` build their requests and hand them to ``_unary`` / ``_read``.
Imports chronik's core, ``client_stream`` (errors off the wire) and the server's wire helpers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from chronik import errors
from chronik.client_stream import error_from_status, retry_hint, retryable
from chronik.client_tls import ClientTLS
from chronik.errors import ConfigurationError
from chronik.messages import RecordedEvent
from chronik.server.remote import channel_options
from chronik.server.wire import event_from_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["ClientChannel"]

T = TypeVar("T")


class ClientChannel:
    """A channel to a chronik server with its service stubs, and the calls' retry loops.

    ``api_key`` is sent as ``x-api-key``, ``token`` as ``authorization: Bearer``; ``timeout``
    bounds each unary call, retries included; ``retries`` is how often an idempotent call is
    retried on UNAVAILABLE, waiting ``backoff`` seconds, doubling up to ``max_backoff`` (and
    on RESOURCE_EXHAUSTED with a retry hint, after the wait the server named). ``tls`` (a
    ``ClientTLS``) makes the channel TLS: the CA to trust, and for mutual TLS the client's
    certificate and key.
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
        tls: ClientTLS | None = None,
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
        self.tls = tls
        if tls is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            options += tls.channel_options()
            self._channel = grpc.aio.secure_channel(address, tls.credentials(), options=options)
        self._gateway = rpc.CommandGatewayStub(self._channel)  # type: ignore[no-untyped-call]
        self._events = rpc.EventStoreStub(self._channel)  # type: ignore[no-untyped-call]
        self._catalog = rpc.CatalogStub(self._channel)  # type: ignore[no-untyped-call]
        self._projections = rpc.ProjectionsStub(self._channel)  # type: ignore[no-untyped-call]
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

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
        name = type(self).__name__
        tls = "" if self.tls is None else ", TLS"
        return f"<{name} {self.address} {state}, {self._auth}{tls}, timeout {self.timeout}s>"

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
        """Wait before another try, or raise (the chronik error) when there is none left.
        A server at a limit (Overloaded, RateLimited) is tried again after the wait it named."""
        hint = retry_hint(exc)
        pause = self.delay(attempt) if hint is None else hint * random.uniform(1.0, 1.25)
        again = retryable(exc) or hint is not None
        if attempt > self.retries or not again or time.monotonic() + pause >= deadline:
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
        """The events a server-streamed read yields; cut short by UNAVAILABLE, it is called
        again with ``resume(request, last event)`` (None: everything asked for was delivered)."""
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
