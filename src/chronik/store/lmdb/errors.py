"""The one place py-lmdb's errors (and the store lock's) are translated to chronik's typed errors.

Every translation keeps the original error as its cause. A failed LMDB commit leaves nothing
of its transaction behind (the meta page is written last), so no write error here has an
unknown outcome.
"""

from __future__ import annotations

import lmdb

from chronik.errors import StoreUnavailable
from chronik.store.records import unit_error

__all__ = ["full", "locked", "open_failed", "read_failed", "unit_failed"]


def open_failed(path: str, exc: BaseException) -> StoreUnavailable:
    """The environment at ``path`` could not be opened."""
    return StoreUnavailable(f"cannot open the LMDB store at {path}: {exc}")


def locked(path: str) -> StoreUnavailable:
    """Another process (or another store object of this one) has the store open."""
    return StoreUnavailable(
        f"{path} is open in another process: an lmdb:// store has one process at a time "
        "(use sqlite:// or postgresql:// to share a store between processes)"
    )


def full(path: str, map_size: int, max_size: int) -> StoreUnavailable:
    """A unit did not fit even after the map grew to ``max_size``; nothing of it is written."""
    return StoreUnavailable(
        f"{path} is full: the unit does not fit in {map_size} bytes and the map may not grow "
        f"past max_size={max_size} (nothing was written; raise ?max_size= or free space)"
    )


def read_failed(path: str, exc: lmdb.Error) -> StoreUnavailable:
    """A read transaction failed."""
    return StoreUnavailable(f"read from {path} failed: {type(exc).__name__}: {exc}")


def unit_failed(path: str, exc: BaseException) -> BaseException:
    """The error one unit fails with when writing it raised ``exc`` (its transaction aborted):
    chronik's own errors as they are, LMDB's (disk full, I/O ...) and any other as
    StoreUnavailable."""
    if isinstance(exc, lmdb.Error):
        error = StoreUnavailable(f"write to {path} failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return unit_error(exc, f"write to {path}")
