"""The one place sqlite3's errors are classified and translated to chronik's typed errors.

Busy (another connection holds the write lock), storage trouble (disk full, I/O, corruption ...:
StoreUnavailable) and statements the database refused (a read-model write or query:
ReadModelError). Every translation keeps the driver's error as its cause.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Final

from chronik.errors import ChronikError, ReadModelError, StoreUnavailable
from chronik.store.base import cancelled_by_caller, unit_error

__all__ = [
    "STORAGE_ERRORS",
    "Busy",
    "batch_failed",
    "is_busy",
    "is_storage_error",
    "locked",
    "open_failed",
    "read_error",
    "refused_table_write",
    "table_read_error",
    "unit_failed",
]

#: sqlite3 error codes that are the database's own trouble rather than a refused statement.
STORAGE_ERRORS: Final = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


class Busy(Exception):
    """Another connection holds the write lock (nothing was done; try again)."""


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def is_storage_error(exc: sqlite3.Error) -> bool:
    """Whether a driver error is the database's own trouble (disk full, I/O, locks ...)
    rather than a refusal of the statement."""
    return getattr(exc, "sqlite_errorcode", None) in STORAGE_ERRORS


def open_failed(path: str, exc: BaseException) -> StoreUnavailable:
    """The file at ``path`` could not be opened."""
    return StoreUnavailable(f"cannot open {path}: {exc}")


def locked(path: str, busy_timeout_ms: int | None = None) -> StoreUnavailable:
    """Another writer held the lock (past ``busy_timeout_ms`` when given)."""
    if busy_timeout_ms is None:
        return StoreUnavailable(f"{path} is locked by another writer")
    return StoreUnavailable(f"{path} stayed locked by another writer for over {busy_timeout_ms} ms")


def read_error(path: str, exc: BaseException) -> BaseException:
    """The error a read raises after ``exc``: ``exc`` itself for chronik's own errors,
    KeyboardInterrupt / SystemExit and a real cancellation of the caller; else typed."""
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"read from {path} failed: {exc}")
    if isinstance(exc, ChronikError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, asyncio.CancelledError) and cancelled_by_caller():
        return exc
    return StoreUnavailable(f"read from {path} failed: {type(exc).__name__}: {exc}")


def table_read_error(path: str, table: str, exc: sqlite3.Error) -> ChronikError:
    """A read-model query failed: a missing table or column is the query's fault."""
    if isinstance(exc, sqlite3.OperationalError) and "no such" in str(exc):
        return ReadModelError(f"read-model query on {table!r} failed: {exc}")
    return StoreUnavailable(f"read from {path} failed: {exc}")


def refused_table_write(exc: BaseException) -> ReadModelError | None:
    """The ReadModelError of a read-model write the database or the driver refused (a bad
    value, a missing table, a constraint); None when ``exc`` is storage trouble."""
    if isinstance(exc, sqlite3.Error) and is_storage_error(exc):
        return None
    return ReadModelError(f"read-model write refused: {exc}")


def unit_failed(path: str, exc: BaseException) -> BaseException:
    """The error one unit of a batch fails with when writing it raised ``exc``."""
    if isinstance(exc, sqlite3.Error):
        error = StoreUnavailable(f"write to {path} failed: {exc}")
        error.__cause__ = exc
        return error
    return unit_error(exc, f"write to {path}")


def batch_failed(
    path: str, exc: BaseException, committing: bool, unknown: bool
) -> StoreUnavailable:
    """Every unit of a batch fails with this when the batch itself failed (BEGIN, COMMIT ...)."""
    what = "commit to" if committing else "write to"
    error = StoreUnavailable(
        f"{what} {path} failed: {type(exc).__name__}: {exc}", outcome_unknown=unknown
    )
    error.__cause__ = exc
    return error
