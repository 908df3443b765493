"""The gRPC edge: what a request must pass before chronik acts on it.

- ``EdgeInterceptor`` parses every request itself, so a message that is not valid protobuf is
  INVALID_ARGUMENT (never UNKNOWN), logged at most once per ``LogLimiter.every`` seconds.
- ``parse_position`` / ``check_sequence`` bound positions and sequences to int64.
- ``check_payload`` applies the JSON value rule to payload bytes (depth, int64, UTF-8).
- ``check_raw_append`` validates EventStore.Append events against the registered schemas, and
  refuses types that no model knows on domains served by models (they would poison the stream);
  the check itself, shared with HTTP and AppendTagged, is ``edge_input.check_raw_events``.
- ``status_for`` maps every chronik error to its status code (the one table,
  ``chronik.server.status``); anything else is a bug:
  INTERNAL, logged with its traceback once a minute per kind (``report_bug``).
- ``Service`` is every servicer's base (auth and the tenant scope, ``_guarded``); ``abort_call``
  ends a call with
  a chronik error's status code, message and trailers.
- ``GrpcHealth`` answers SERVING only while the app works; ``bind_error`` types a failed bind.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2

from chronik import errors as e
from chronik.app import Chronik
from chronik.codec import INT64_MAX, decode_json
from chronik.errors import ChronikError, CommandRejected, ValidationError
from chronik.health import store_problem
from chronik.messages import EventData, Position, StreamId
from chronik.server.auth import Action, ApiKey, Auth
from chronik.server.edge_input import check_raw_events
from chronik.server.status import wire_status
from chronik.server.tenancy import Scope, TenancyConfig
from chronik.server.wire import error_trailers

__all__ = [
    "EdgeInterceptor",
    "GrpcHealth",
    "LogLimiter",
    "Service",
    "abort_call",
    "bind_error",
    "check_payload",
    "check_raw_append",
    "check_sequence",
    "parse_position",
    "report_bug",
    "status_for",
]

log = logging.getLogger("chronik.server")
T = TypeVar("T")


class LogLimiter:
    """Lets one log line through per key every ``every`` seconds and counts the rest."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """The number of lines suppressed since the last one if this one may go out, else None."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._dropped.pop(key, 0)


# --- parsing requests -------------------------------------------------------------------------

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Hands the servicers parsed requests; a malformed one is INVALID_ARGUMENT, not UNKNOWN.

    The guarded handler of a method is made once, for as long as the server hands out the same
    handler for it."""

    def __init__(self, limiter: LogLimiter | None = None) -> None:
        self.limiter = limiter or LogLimiter()
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        made = self._guarded.get(method)
        if made is None or made[0] is not handler:
            made = self._guarded[method] = (handler, _guard(handler, method, self.limiter))
        return made[1]


def _guard(handler: Any, method: str, limiter: LogLimiter) -> Handler:
    parse_raw = handler.request_deserializer
    serialize = handler.response_serializer

    async def parse(raw: bytes, context: Context) -> Any:
        try:
            return parse_raw(raw)
        except Exception as exc:  # DecodeError, or anything a deserializer raises on bad bytes
            dropped = limiter.allow(f"malformed:{method}")
            if dropped is not None:
                more = f" ({dropped} more since the last report)" if dropped else ""
                log.warning("malformed %s request: %s%s", method, exc, more)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed request: not a valid protobuf message for {method}",
            )

    if not handler.request_streaming and not handler.response_streaming:
        unary = handler.unary_unary

        async def unary_unary(raw: bytes, context: Context) -> Any:
            return await _result(unary(await parse(raw, context), context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serialize)
    if not handler.request_streaming:
        stream = handler.unary_stream
        if inspect.isasyncgenfunction(stream):

            async def unary_stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
                async for item in stream(await parse(raw, context), context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, None, serialize)

        async def unary_write(raw: bytes, context: Context) -> None:  # writes via context.write
            await _result(stream(await parse(raw, context), context))

        return grpc.unary_stream_rpc_method_handler(unary_write, None, serialize)

    async def requests(raw: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        async for item in raw:
            yield await parse(item, context)

    if not handler.response_streaming:
        client_stream = handler.stream_unary

        async def stream_unary(raw: AsyncIterator[bytes], context: Context) -> Any:
            return await _result(client_stream(requests(raw, context), context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serialize)
    both = handler.stream_stream
    if inspect.isasyncgenfunction(both):

        async def stream_stream(raw: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            async for item in both(requests(raw, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, None, serialize)

    async def stream_write(raw: AsyncIterator[bytes], context: Context) -> None:
        await _result(both(requests(raw, context), context))

    return grpc.stream_stream_rpc_method_handler(stream_write, None, serialize)


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# --- fields -----------------------------------------------------------------------------------


def parse_position(text: str, field: str) -> Position | None:
    """A position field (empty: None); INVALID_ARGUMENT naming ``field`` if malformed or out
    of the int64 range every store can hold (``Position.parse``)."""
    return Position.parse(text, field) if text else None


def check_sequence(value: int, field: str) -> int:
    """A sequence number that fits int64 (the wire allows uint64)."""
    if not 0 <= value <= INT64_MAX:
        raise ValidationError(f"{field}: {value} is out of range (0 to 2**63-1)", field=field)
    return value


def check_payload(raw: bytes, field: str) -> Any:
    """The JSON value in ``raw``, checked by the codec's value rule (``decode_json``): bad
    JSON, deep nesting, ints beyond int64, NaN, lone surrogates are INVALID_ARGUMENT naming
    ``field`` and the path below it."""
    return decode_json(raw, field)


# --- raw appends ------------------------------------------------------------------------------


def check_raw_append(app: Chronik, stream: StreamId, events: Sequence[EventData]) -> None:
    """Refuse events that the domain's business logic could not load later
    (``chronik.server.edge_input.check_raw_events`` on the stream's domain)."""
    check_raw_events(app, stream.domain, events)


# --- servicers ------------------------------------------------------------------------------


async def abort_call(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """End the call with ``exc``'s status code, message and error trailers (INTERNAL without
    details for a bug, which is logged)."""
    code = status_for(exc)
    if isinstance(exc, ChronikError):
        message = exc.reason if isinstance(exc, CommandRejected) else str(exc)
        context.set_trailing_metadata(error_trailers(exc))
    else:
        report_bug(exc, "a gRPC call")
        message = "internal error"
    await context.abort(code, message)


class Service:
    """What every chronik servicer shares: the app, auth (``_allow`` a right, answering the
    caller's tenant scope), and ``_guarded`` (run a unary call, its error answered by
    ``abort_call``)."""

    #: tenancy when the server has no auth (``GrpcServer`` sets it): required means nothing
    tenancy: TenancyConfig = TenancyConfig()

    def __init__(self, app: Chronik, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    def _key(self, context: grpc.aio.ServicerContext[Any, Any]) -> ApiKey | None:
        if self.auth is None:
            return None
        return self.auth.authenticate(context.invocation_metadata() or ())

    def _allow(self, context: grpc.aio.ServicerContext[Any, Any], action: Action) -> Scope:
        key = self._key(context)
        if key is not None:
            Auth.allow(key, action)
        return self._scope(key)

    def _scope(self, key: ApiKey | None) -> Scope:
        """The tenants a call with ``key`` reaches (``chronik.server.tenancy``)."""
        if self.auth is None:
            return Scope.of(None, self.tenancy)
        return self.auth.scope(key)

    async def _guarded(
        self, context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await call()
        except (ChronikError, Exception) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            await abort_call(context, exc)
            raise  # pragma: no cover - abort raises


# --- status codes, bugs, health, ports -------------------------------------------------------

HEALTH_PROBE_TIMEOUT: Final = 2.0
_bugs = LogLimiter(every=60.0)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code an error maps to (``chronik.server.status``): INTERNAL for a bug."""
    return grpc.StatusCode[wire_status(exc).grpc]


def report_bug(exc: BaseException, where: str) -> None:
    """Log an unexpected exception with its traceback, once a minute per kind and place."""
    dropped = _bugs.allow(f"{where}:{type(exc).__qualname__}")
    if dropped is not None:
        more = f" ({dropped} more since the last report)" if dropped else ""
        log.error("unexpected error in %s%s", where, more, exc_info=exc)


class GrpcHealth(health.aio.HealthServicer):
    """Health that looks before it answers Check: SERVING only while the app really works."""

    def __init__(self, app: Chronik) -> None:
        super().__init__()
        self.app = app
        self.names: list[str] = []
        self.problem: str | None = None

    async def probe(self) -> bool:
        """Whether the app works now (the store answers, its writer works, no vital background
        task is dead); sets every service's status accordingly."""
        store = self.app.store
        problems = self.app.health.fatal(store)
        writer = store_problem(store)
        if writer is not None:
            problems.append(writer)
        try:
            async with asyncio.timeout(HEALTH_PROBE_TIMEOUT):
                await store.head()
        except Exception as exc:  # any failure means not serving; the reason is logged
            problems.append(f"store: {type(exc).__name__}: {exc}")
        problem = "; ".join(problems) or None
        if problem != self.problem:
            self.problem = problem
            if problem is None:
                log.warning("gRPC health: SERVING again")
            else:
                log.warning("gRPC health: NOT_SERVING (%s)", problem)
        serving = health_pb2.HealthCheckResponse.SERVING
        status = serving if problem is None else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.names:
            await self.set(name, status)
        return problem is None

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.HealthCheckResponse:
        await self.probe()
        return await super().Check(request, context)


def bind_error(what: str, host: str, port: int) -> ChronikError:
    """The typed error of a server that could not listen on host:port: PortInUse if another
    process holds the port (gRPC does not say why; the same bind, tried here, does)."""
    reason = "the address is not available"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:  # gaierror included
        if exc.errno == errno.EADDRINUSE:
            return e.PortInUse(what, host, port)
        reason = exc.strerror or str(exc)
    return e.ConfigurationError(f"cannot listen on {what} {host}:{port}: {reason}")
