"""The node's limits at the gRPC edge: ``LimitInterceptor`` refuses a call past a limit with
RESOURCE_EXHAUSTED at once, before its request is even parsed.

- CommandGateway.Handle holds an in-flight command slot while it runs;
- EventStore.Subscribe holds a subscription slot while the stream is open;
- every chronik call (not health, not reflection) presenting an API key with a ``rate`` takes
  a token of the key's bucket (an unknown key passes on: the servicer answers UNAUTHENTICATED).

A refusal carries the error trailers every chronik error carries (the class ``Overloaded`` or
``RateLimited`` and its fields, ``retry_after_ms`` among them) and a ``retry-after-ms``
trailer (``chronik.server.limits.RETRY_AFTER_METADATA``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

import grpc

from chronik.errors import AuthenticationError, Overloaded
from chronik.server.auth import Auth
from chronik.server.limits import RETRY_AFTER_METADATA, Limiter
from chronik.server.wire import error_trailers

__all__ = ["COMMAND_METHOD", "SUBSCRIBE_METHOD", "LimitInterceptor"]

COMMAND_METHOD: Final = "/chronik.v1.CommandGateway/Handle"
SUBSCRIBE_METHOD: Final = "/chronik.v1.EventStore/Subscribe"
_RATED_PREFIX: Final = "/chronik.v1."


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], exc: Overloaded) -> None:
    context.set_trailing_metadata(
        (*error_trailers(exc), (RETRY_AFTER_METADATA, str(exc.retry_after_ms)))
    )
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))


class LimitInterceptor(grpc.aio.ServerInterceptor):
    """Applies a ``Limiter`` to the calls of a gRPC server (see the module docstring)."""

    def __init__(self, limiter: Limiter, auth: Auth | None = None) -> None:
        self.limiter = limiter
        self.auth = auth
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method: (handler, its wrapper)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_RATED_PREFIX):
            return handler
        limiter = self.limiter
        if method == COMMAND_METHOD:
            slot: Callable[[], AbstractContextManager[None]] = limiter.command
        elif method == SUBSCRIBE_METHOD:
            slot = limiter.subscription
        else:
            slot = nullcontext
        if slot is nullcontext and (self.auth is None or not limiter.rated):
            return handler
        made = self._wrapped.get(method)  # made once per method, as the edge's guard
        if made is None or made[0] is not handler:
            made = self._wrapped[method] = (handler, _wrap(handler, self._admit, slot))
        return made[1]

    def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Take a token of the caller's API key, if it has a rate (RateLimited if none is left)."""
        if self.auth is None or not self.limiter.rated:
            return
        try:
            key = self.auth.authenticate(context.invocation_metadata() or ())
        except AuthenticationError:
            return  # the servicer answers it
        self.limiter.check_rate(key.name)


def _wrap(
    handler: Any,
    admit: Callable[[grpc.aio.ServicerContext[Any, Any]], None],
    slot: Callable[[], AbstractContextManager[None]],
) -> Any:
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming:  # no client-streaming chronik call is limited
        return handler
    if not handler.response_streaming:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                admit(context)
                held = slot()
                held.__enter__()
            except Overloaded as exc:
                await _refuse(context, exc)
                raise  # pragma: no cover - abort raises
            try:
                result = unary(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                held.__exit__(None, None, None)

        return grpc.unary_unary_rpc_method_handler(unary_unary, deserialize, serialize)
    stream = handler.unary_stream
    if inspect.isasyncgenfunction(stream):

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                admit(context)
                held = slot()
                held.__enter__()
            except Overloaded as exc:
                await _refuse(context, exc)
                raise  # pragma: no cover - abort raises
            try:
                async for item in stream(request, context):
                    yield item
            finally:
                held.__exit__(None, None, None)

        return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)

    async def unary_write(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            admit(context)
            held = slot()
            held.__enter__()
        except Overloaded as exc:
            await _refuse(context, exc)
            raise  # pragma: no cover - abort raises
        try:
            result = stream(request, context)
            if inspect.isawaitable(result):
                await result
        finally:
            held.__exit__(None, None, None)

    return grpc.unary_stream_rpc_method_handler(unary_write, deserialize, serialize)
