"""The LMDB store's environment: its URL and options, the single-process lock, the named
sub-databases and the map size.

``lmdb:///path/to/dir`` names a directory (created on open) holding LMDB's ``data.mdb`` and
``lock.mdb`` and chronik's ``chronik.lock``. Opening takes an exclusive ``fcntl.flock`` on
``chronik.lock``; a second process (or a second store object in this one: LMDB forbids opening
one environment twice in a process) gets StoreUnavailable naming the path. The kernel drops the
lock when the holder exits, kill -9 included, so a crashed writer never blocks a restart.

Durability (``?sync=``): ``normal`` (the default) opens LMDB with ``metasync=False``: each
commit flushes its data pages but not the meta page, so a process crash loses nothing and a
power loss or OS crash may undo the last commits but never corrupts the store; ``full`` flushes
both on every commit (``sync=True``), so a commit that returned survives power loss too.

The map (LMDB's address-space reservation, not disk use) starts at ``map_size`` bytes and
doubles when a write does not fit, up to ``max_size``; past that a write fails with a typed
StoreUnavailable and nothing of it is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import lmdb

from chronik.errors import ConfigurationError, StoreUnavailable
from chronik.store.lmdb.errors import locked, open_failed
from chronik.store.lmdb.keys import DATABASES
from chronik.store.lmdb.tables import ensure_system_tables

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_SIZE",
    "FORMAT",
    "Env",
    "options_from_url",
    "path_from_url",
]

FORMAT: Final = 1  # the layout of chronik.store.lmdb.keys; a newer store is refused
DEFAULT_MAP_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_SIZE: Final = 1024**4  # 1 TiB of address space
_LOCK_FILE: Final = "chronik.lock"


def path_from_url(url: str) -> str:
    """The directory of ``lmdb:///rel/dir`` (relative) or ``lmdb:////abs/dir``."""
    parts = urlsplit(url)
    if parts.scheme != "lmdb":
        raise ConfigurationError(f"not an lmdb URL: {url!r}")
    path = parts.netloc + parts.path
    if path.startswith("/") and not parts.netloc:
        path = path[1:]
    if not path:
        raise ConfigurationError(f"{url!r} names no directory: use lmdb:///path/to/dir")
    return path


def options_from_url(url: str) -> dict[str, Any]:
    """Store options given in the URL's query string (sync=full, map_size=..., max_size=...)."""
    converters: dict[str, Callable[[str], Any]] = {
        "sync": str.lower,
        "map_size": int,
        "max_size": int,
        "max_payload_bytes": int,
        "max_append_events": int,
    }
    options: dict[str, Any] = {}
    for key, values in parse_qs(urlsplit(url).query).items():
        if key not in converters:
            raise ConfigurationError(f"unknown lmdb option {key!r} in {url!r}")
        try:
            options[key] = converters[key](values[-1])
        except ValueError:
            raise ConfigurationError(f"invalid value for {key!r} in {url!r}") from None
    return options


def check_options(sync: str, map_size: int, max_size: int) -> None:
    """ConfigurationError naming the option unless the options make sense."""
    if sync not in ("normal", "full"):
        raise ConfigurationError(f"sync must be 'normal' or 'full', not {sync!r}")
    if type(map_size) is not int or map_size < 1024 * 1024:
        raise ConfigurationError(f"map_size must be an int of at least 1 MiB, not {map_size!r}")
    if type(max_size) is not int or max_size < map_size:
        raise ConfigurationError(f"max_size must be an int >= map_size, not {max_size!r}")


class Env:
    """The open environment, its sub-databases and the lock file (blocking calls: the
    store makes them on its writer thread)."""

    def __init__(self, path: str, sync: str, map_size: int, max_size: int) -> None:
        self.path = path
        self.sync = sync
        self.max_size = max_size
        self.map_size = map_size
        self._lock_fd: int | None = None
        self.env: lmdb.Environment | None = None
        self.dbs: dict[str, lmdb._Database] = {}

    def open(self, create: bool) -> None:
        """Lock the directory, open the environment and its sub-databases (StoreUnavailable
        when another process holds it, or it is missing and ``create`` is False)."""
        if not create and not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise StoreUnavailable(f"no store at {self.path}")
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(os.path.join(self.path, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise open_failed(self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise locked(self.path) from exc
        self._lock_fd = fd
        try:
            self._open_env()
        except BaseException:
            self.close()
            raise

    def _open_env(self) -> None:
        try:
            env = lmdb.open(
                self.path,
                map_size=self.map_size,
                max_dbs=len(DATABASES),
                sync=True,
                metasync=self.sync == "full",
                max_spare_txns=4,
            )
        except lmdb.Error as exc:
            raise open_failed(self.path, exc) from exc
        self.env = env
        env.reader_check()  # reader slots left by a process that died (kill -9) are freed
        with env.begin(write=True) as txn:
            self.dbs = {name: env.open_db(name.encode(), txn=txn) for name in DATABASES}
            meta = self.dbs["meta"]
            stored = txn.get(b"format", db=meta)
            if stored is not None and int(stored) > FORMAT:
                raise ConfigurationError(
                    f"{self.path} has store format {int(stored)}, newer than this chronik "
                    f"({FORMAT}): upgrade chronik"
                )
            txn.put(b"format", str(FORMAT).encode(), db=meta)
            ensure_system_tables(txn, self.dbs)
            grown = int(txn.get(b"map_size", db=meta) or 0)
        size = max(self.map_size, grown, env.info()["map_size"])  # a grown map stays grown
        if size != env.info()["map_size"]:
            env.set_mapsize(size)  # no transaction is open
        self.map_size = size

    def grow(self) -> bool:
        """Double the map (at most to max_size); False when it is at max_size already.

        Only while no transaction of this process is open: the store calls it on the event
        loop (where reads run, each within one call) between two batches of its writer.
        """
        if self.map_size >= self.max_size or self.env is None:
            return False
        self.map_size = min(self.max_size, self.map_size * 2)
        self.env.set_mapsize(self.map_size)
        # remembered for the next open (a cheap write)
        with contextlib.suppress(lmdb.Error), self.env.begin(write=True) as txn:
            txn.put(b"map_size", str(self.map_size).encode(), db=self.dbs["meta"])
        return True

    def close(self) -> None:
        """Close the environment and release the lock."""
        if self.env is not None:
            with contextlib.suppress(lmdb.Error):
                self.env.close()
            self.env = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
