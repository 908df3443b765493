"""The one place the Redis store translates the driver's errors into chronik's typed errors.

A lost or refused connection is StoreUnavailable; during a write whose script may have run it
says the outcome is unknown (retry with the same event ids: the retry answers with the
original result). A script the server refused or aborted (a key of the wrong type under the
prefix, a server out of memory, a busy script) is StoreUnavailable too: the write script
checks everything before its first write, so an aborted script wrote nothing. Every
translation keeps the driver's error as its cause.
"""

from __future__ import annotations

from typing import Final

import redis.exceptions

from chronik.adapters import safe_url
from chronik.errors import StoreUnavailable
from chronik.store.records import unit_error

__all__ = ["DRIVER_ERRORS", "read_failed", "write_failed"]

#: What the driver raises for the server's trouble (connection, refusal, script errors).
DRIVER_ERRORS: Final = (redis.exceptions.RedisError, OSError)


def _lost(exc: BaseException) -> bool:
    return isinstance(
        exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError
    )


def _never_sent(exc: BaseException) -> bool:
    """Whether the command cannot have reached the server (the connection was not made)."""
    text = str(exc)
    return "connecting to" in text or "Too many connections" in text or "No connection" in text


def write_failed(url: str, exc: BaseException) -> BaseException:
    """The error a write raises after ``exc`` (chronik's own errors and real cancellations of
    the caller pass through; the rest become StoreUnavailable)."""
    if not isinstance(exc, DRIVER_ERRORS):
        return unit_error(exc, f"writing to {safe_url(url)}")
    if _lost(exc):
        unknown = not _never_sent(exc)
        error = StoreUnavailable(
            f"write to {safe_url(url)} failed: {type(exc).__name__}: {exc}",
            outcome_unknown=unknown,
        )
    else:
        error = StoreUnavailable(f"Redis refused the write to {safe_url(url)}: {exc}")
    error.__cause__ = exc
    return error


def read_failed(url: str, exc: BaseException) -> BaseException:
    """The error a read raises after ``exc``."""
    if not isinstance(exc, DRIVER_ERRORS):
        return unit_error(exc, f"reading from {safe_url(url)}")
    error = StoreUnavailable(f"read from {safe_url(url)} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
