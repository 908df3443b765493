"""The LMDB event store (``lmdb:///path/to/dir``): embedded, one process, no SQL.

The adapter assembles the package: ``env`` (URL, options, lock, map size), ``commit`` (the
writer thread and its group commit, which writes through ``write``), ``read`` (pages on the
event loop) and ``errors``. Readers never wait for the writer: each page is one read
transaction, a snapshot of the last commit.
"""

from __future__ import annotations

from chronik.messages import AppendResult
from chronik.store.base import EventStore, WriteUnit
from chronik.store.lmdb.commit import Writer
from chronik.store.lmdb.env import (
    DEFAULT_MAP_SIZE,
    DEFAULT_MAX_SIZE,
    Env,
    check_options,
    options_from_url,
    path_from_url,
)
from chronik.store.lmdb.keys import Dbs
from chronik.store.lmdb.read import LmdbReader

__all__ = ["LmdbEventStore", "options_from_url"]


class LmdbEventStore(LmdbReader, EventStore):
    """An event store in one LMDB environment (a directory), for one process at a time.

    Options (keywords, or the URL's query string): ``sync`` (``normal``: a process crash loses
    nothing, a power loss may undo the last commits; ``full``: every returned commit survives
    power loss), ``map_size`` (the initial map in bytes) and ``max_size`` (how far the map may
    grow), ``create`` (False: a missing store is StoreUnavailable, not created).
    """

    supports_tables = True
    head_bounds_reads = True

    def __init__(
        self,
        url: str,
        *,
        sync: str | None = None,
        map_size: int | None = None,
        max_size: int | None = None,
        create: bool = True,
        **limits: int,
    ) -> None:
        given = options_from_url(url)  # keywords win over the URL's query string
        from_url: dict[str, int] = {
            k: given[k] for k in ("max_payload_bytes", "max_append_events") if k in given
        }
        super().__init__(**{**from_url, **limits})
        sync = sync if sync is not None else given.get("sync", "normal")
        map_size = map_size if map_size is not None else given.get("map_size", DEFAULT_MAP_SIZE)
        max_size = max_size if max_size is not None else given.get("max_size", DEFAULT_MAX_SIZE)
        check_options(sync, map_size, max_size)
        self.url = url
        self.path = path_from_url(url)
        self.sync = sync
        self.create = create
        self._store_env = Env(self.path, sync, map_size, max_size)
        self._env = None
        self._dbs: Dbs = {}
        self._writer = Writer(self._store_env, self._batch_done)
        self._init_reader()

    @property
    def map_size(self) -> int:
        """The current map size in bytes (it grows as the store fills, up to max_size)."""
        return self._store_env.map_size

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        env = self._store_env
        await self._writer.run(lambda: env.open(self.create))
        self._env = env.env
        self._dbs = env.dbs

    async def _close(self) -> None:
        await self._writer.drain()  # queued units finish first
        self._env = None
        await self._writer.run(self._store_env.close)
        self._writer.shutdown()

    # --- writing (chronik.store.lmdb.commit) --------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        self._writer.fault_hook = self.fault_hook
        return await self._writer.write(unit)

    def _batch_done(self, failed: BaseException | None, wrote: bool) -> None:
        """After each batch: health, and a wake-up for readers when something committed."""
        if failed is not None:
            self._write_failed(failed)
        elif wrote:
            self._write_succeeded()
        if wrote:
            self._notify()
