"""The one place asyncpg's errors are classified and translated to chronik's typed errors.

Used by the PostgreSQL store (reads, writes, read-model tables, migrations) and by the
PostgreSQL transport. Every translation chains the driver's error (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg

from chronik.adapters import safe_url
from chronik.errors import (
    ChronikError,
    PermissionDenied,
    StoreUnavailable,
    TransportUnavailable,
    ValidationError,
)
from chronik.store.base import cancelled_by_caller, unit_error

__all__ = [
    "DRIVER_ERRORS",
    "REFUSED_QUERY",
    "is_connection_error",
    "read_error",
    "refused_table_write",
    "refused_value",
    "table_error",
    "transport_unavailable",
    "unavailable",
    "write_error",
]

#: Everything the driver raises that chronik translates (to StoreUnavailable, mostly). The
#: transport once caught all of these but asyncpg.InternalClientError (a protocol-level
#: failure of the client), which escaped it untyped; it now becomes TransportUnavailable too.
DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (or the server) went away."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.InsufficientResourcesError,
    )


def table_error(exc: BaseException) -> bool:
    """Whether a driver error means the read-model statement itself was refused."""
    return isinstance(
        exc,
        asyncpg.DataError
        | asyncpg.IntegrityConstraintViolationError
        | asyncpg.SyntaxOrAccessError
        | asyncpg.InterfaceError,
    ) and not isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError)


def refused_table_write(exc: asyncpg.PostgresError) -> bool:
    """Whether the database refused a read-model write itself (a missing table or column, a
    bad value, a constraint): a ReadModelError, not an outage."""
    return isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError) or (
        table_error(exc)
    )


#: What a refused read-model query raises (becomes ReadModelError).
REFUSED_QUERY: Final = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.DataError,
    asyncpg.UndefinedFunctionError,
)


def refused_value(exc: asyncpg.DataError) -> ValidationError:
    """A value PostgreSQL refused (e.g. a NUL character in a text value)."""
    return ValidationError(f"PostgreSQL refused a value: {exc}")


def unavailable(what: str, url: str, exc: BaseException, unknown: bool = False) -> StoreUnavailable:
    """``what`` on the store at ``url`` (password hidden) failed because of ``exc``."""
    return StoreUnavailable(
        f"{what} on {safe_url(url)} failed: {type(exc).__name__}: {exc}",
        outcome_unknown=unknown,
    )


def read_error(what: str, url: str, exc: BaseException) -> BaseException:
    """The error a read raises after ``exc``: ``exc`` itself for chronik's own errors,
    KeyboardInterrupt / SystemExit and a real cancellation of the caller; else typed."""
    if isinstance(exc, asyncpg.DataError):
        return refused_value(exc)
    if isinstance(exc, DRIVER_ERRORS):
        return unavailable(what, url, exc)
    if isinstance(exc, ChronikError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, asyncio.CancelledError) and cancelled_by_caller():
        return exc
    return unavailable(what, url, exc)


def write_error(url: str, exc: BaseException) -> tuple[BaseException, bool]:
    """The error a write raises after ``exc`` (not a ChronikError), and whether its connection
    may be broken (it is then discarded, never pooled again)."""
    if is_connection_error(exc):
        return unavailable("write", url, exc, unknown=True), True
    if isinstance(exc, asyncpg.DataError):
        return refused_value(exc), False
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):  # a role's rights, a tenant's RLS
        return PermissionDenied(f"write on {safe_url(url)} refused: {exc}"), False
    if isinstance(exc, asyncpg.PostgresError):
        return unavailable("write", url, exc), False
    return unit_error(exc, f"write on {safe_url(url)}"), True


def transport_unavailable(
    what: str, exc: BaseException, unknown: bool = False
) -> TransportUnavailable:
    """``what`` (e.g. ``PostgreSQL transport``) could not reach the server because of ``exc``."""
    return TransportUnavailable(f"{what}: {exc}", outcome_unknown=unknown)
