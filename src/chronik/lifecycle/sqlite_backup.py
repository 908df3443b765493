"""An online backup of a SQLite store with SQLite's backup API, safe while others write.

The copy is read inside one read transaction on the source: in WAL mode (every chronik SQLite
store) readers never block writers and see one snapshot, so the backup is the store as it was
when the copy started, whatever a running server appends meanwhile, and the server is never
stopped or slowed beyond the disk reads. The copy is written next to the target under a
temporary name and renamed into place once complete and checked, so a crash never leaves half
a backup under the target's name. The backup is itself a store: open it with
``sqlite:///PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chronik.errors import ConfigurationError, StoreUnavailable
from chronik.messages import Position
from chronik.store import open_store
from chronik.store.sqlite.schema import path_from_url

__all__ = ["BACKUP_DOCS", "BackupReport", "backup_sqlite"]

#: Where the docs say how to back up the other stores.
BACKUP_DOCS: Final = "docs/how-to/backup-export.md"
#: Pages copied per step of the backup (4 KiB pages: 4 MiB a step), between progress calls.
STEP_PAGES: Final = 1024

#: A backup progress callback: (pages copied, total pages).
PageProgress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class BackupReport:
    """A finished backup: where it is, its size, and the head position it holds."""

    path: str
    pages: int
    bytes: int
    head: Position | None
    seconds: float


async def backup_sqlite(
    url: str,
    to: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: PageProgress | None = None,
) -> BackupReport:
    """Back up the SQLite store at ``url`` (``sqlite:///path.db``) to the file ``to``.

    ConfigurationError for another kind of store (naming the docs on backing it up) or when
    ``to`` exists and ``overwrite`` is False; StoreUnavailable if the store cannot be read or
    the copy cannot be written. Runs in a worker thread; ``progress`` is called there.
    """
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) else ""
    if scheme != "sqlite":
        raise ConfigurationError(
            f"chronik backup copies SQLite stores (sqlite:///path.db), not {scheme or url!r}: "
            f"see {BACKUP_DOCS} for PostgreSQL (pg_dump, physical backups and point-in-time "
            "recovery), or use `chronik export`, which works on every store"
        )
    source = path_from_url(url)
    started = time.monotonic()
    pages, size, copied = await asyncio.to_thread(_copy, source, Path(to), overwrite, progress)
    async with open_store(f"sqlite:///{copied}", create=False) as copy:
        head = await copy.head()
    return BackupReport(str(to), pages, size, head, time.monotonic() - started)


def _copy(
    source: str, target: Path, overwrite: bool, progress: PageProgress | None
) -> tuple[int, int, str]:
    """Copy ``source`` into a temporary file beside ``target``, check it, rename it:
    (pages, bytes, the target's absolute path)."""
    if not os.path.isfile(source):
        raise StoreUnavailable(f"no store at {source}")
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} exists: pass --force to replace it")
    if target.resolve() == Path(source).resolve():
        raise ConfigurationError(f"{target} is the store itself")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    _remove(partial)
    total = 0

    def step(status: int, remaining: int, count: int) -> None:
        nonlocal total
        total = count
        if progress is not None:
            progress(count - remaining, count)

    try:
        src = sqlite3.connect(source, isolation_level=None, check_same_thread=False)
        try:
            src.execute("PRAGMA busy_timeout = 10000")
            src.execute("PRAGMA query_only = 1")
            # One read transaction for the whole copy: one snapshot, however many steps.
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            dst = sqlite3.connect(partial, isolation_level=None)
            try:
                src.backup(dst, pages=STEP_PAGES, progress=step, sleep=0.05)
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise StoreUnavailable(f"the backup of {source} does not check: {check}")
                # fold the copy's WAL (it inherits the source's WAL mode) into the file
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                dst.close()
            src.execute("COMMIT")
        finally:
            src.close()
        os.replace(partial, target)
        return total, target.stat().st_size, str(target.resolve())
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"backup of {source} to {target} failed: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"backup of {source} to {target} failed: {exc}") from exc
    finally:
        _remove(partial)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
