"""The one place asyncmy's errors are classified and translated to chronik's typed errors.

Every translation chains the driver's error (``raise ... from exc``). A lost connection while
the statement that commits was on its way gives StoreUnavailable with ``outcome_unknown=True``
(retry with the same event ids: a committed unit answers with its original result); one lost
before it gives a plain StoreUnavailable (the server rolled the transaction back).
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncmy.errors as my

from chronik.adapters import safe_url
from chronik.errors import ChronikError, ReadModelError, StoreUnavailable
from chronik.store.records import cancelled_by_caller, unit_error

__all__ = [
    "DEADLOCK",
    "DRIVER_ERRORS",
    "DUPLICATE_KEY",
    "LOCK_WAIT_TIMEOUT",
    "SERVER_GONE",
    "code",
    "duplicate_key",
    "is_connection_error",
    "not_sent",
    "read_error",
    "refused",
    "table_error",
    "unavailable",
    "write_error",
]

#: Everything the driver raises that chronik translates.
DRIVER_ERRORS: Final = (my.MySQLError, OSError, EOFError, TimeoutError)

DUPLICATE_KEY: Final = 1062
LOCK_WAIT_TIMEOUT: Final = 1205
DEADLOCK: Final = 1213
SERVER_GONE: Final = 2006
#: Server errors that end the session: shutdown, killed, idle transaction timeout, too many
#: connections, and the client's own "gone away" / "lost connection" family (2000-2999).
_SESSION_ENDED: Final = frozenset({1040, 1053, 1152, 1184, 1927, 4031})


def code(exc: BaseException) -> int | None:
    """The MySQL error number of a driver error, or None."""
    if isinstance(exc, my.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (or the server) went away."""
    if isinstance(exc, OSError | EOFError | TimeoutError | my.InterfaceError):
        return True
    n = code(exc)
    return n is not None and (n in _SESSION_ENDED or 2000 <= n < 3000 or n == 0)


def not_sent(exc: BaseException) -> bool:
    """Whether the driver refused to send the statement because the connection was closed
    already ("MySQL server has gone away", 2006): the server never saw it."""
    return code(exc) == SERVER_GONE


def duplicate_key(exc: BaseException, key: str) -> bool:
    """Whether ``exc`` is a duplicate entry for the unique key named ``key``."""
    return code(exc) == DUPLICATE_KEY and f"'{key}'" in str(exc)


def refused(exc: BaseException) -> bool:
    """Whether the server refused a statement itself (a missing table or column, a value that
    does not fit, a constraint): an error of the request, not an outage."""
    n = code(exc)
    return (
        isinstance(exc, my.DatabaseError)
        and n is not None
        and 1000 <= n < 2000
        and n not in _SESSION_ENDED
        and n not in (LOCK_WAIT_TIMEOUT, DEADLOCK)
    )


def table_error(exc: BaseException, table: str | None = None) -> ReadModelError:
    """A refused read-model statement as ReadModelError."""
    where = f" on {table!r}" if table else ""
    return ReadModelError(f"read-model statement{where} refused: {exc}")


def unavailable(what: str, url: str, exc: BaseException, unknown: bool = False) -> StoreUnavailable:
    """``what`` on the store at ``url`` (password hidden) failed because of ``exc``."""
    return StoreUnavailable(
        f"{what} on {safe_url(url)} failed: {type(exc).__name__}: {exc}",
        outcome_unknown=unknown,
    )


def read_error(what: str, url: str, exc: BaseException) -> BaseException:
    """The error a read raises after ``exc``: ``exc`` itself for chronik's own errors,
    KeyboardInterrupt / SystemExit and a real cancellation of the caller; else typed."""
    if isinstance(exc, ChronikError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, asyncio.CancelledError) and cancelled_by_caller():
        return exc
    return unavailable(what, url, exc)


def write_error(url: str, exc: BaseException, committing: bool) -> tuple[BaseException, bool]:
    """The error a write raises after ``exc`` (not a ChronikError), and whether its connection
    may be broken (it is then closed, never pooled again). ``committing``: the statement that
    commits had been sent, so a lost connection leaves the outcome unknown."""
    if is_connection_error(exc):
        return unavailable("write", url, exc, unknown=committing), True
    if isinstance(exc, my.MySQLError):
        return unavailable("write", url, exc), False
    return unit_error(exc, f"write on {safe_url(url)}"), True
