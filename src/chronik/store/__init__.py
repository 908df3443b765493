"""Event store adapters, chosen by URL; ``open_store`` is the way in.

Adapters are imported by path (``chronik.store.sqlite``) and only when their URL is used, so a
backend whose extra is not installed costs nothing until it is asked for.
"""

from __future__ import annotations

from typing import Any

from chronik.adapters import Adapters, load_adapter
from chronik.store.base import EventStore, UnitOfWork
from chronik.store.group import GroupStore
from chronik.store.rw import ReadWriteStore

__all__ = ["EventStore", "GroupStore", "ReadWriteStore", "UnitOfWork", "open_store"]

_ADAPTERS: Adapters = {
    "memory": ("chronik.store.memory", "MemoryEventStore", None, None),
    "sqlite": ("chronik.store.sqlite", "SQLiteEventStore", None, None),
    "lmdb": ("chronik.store.lmdb", "LmdbEventStore", "lmdb", "lmdb"),
    "postgresql": ("chronik.store.postgres", "PostgresEventStore", "postgres", "asyncpg"),
    "postgres": ("chronik.store.postgres", "PostgresEventStore", "postgres", "asyncpg"),
    "redis": ("chronik.store.redis", "RedisEventStore", "redis", "redis"),
    "mysql": ("chronik.store.mysql", "MySQLEventStore", "mysql", "asyncmy"),
    "mariadb": ("chronik.store.mysql", "MySQLEventStore", "mysql", "asyncmy"),
    "rw": ("chronik.store.composite_urls", "open_rw", None, None),
    "group": ("chronik.store.composite_urls", "open_group", None, None),
}


def open_store(url: str, *, create: bool = True, **options: Any) -> EventStore:
    """The event store for ``url`` (``memory://``, ``sqlite:///path.db``, ``postgresql://...``).

    Use it as ``async with open_store(url) as store``; it opens on first use otherwise. Options
    in the URL's query string or as keywords: ``max_payload_bytes``, ``max_append_events`` and
    the adapter's own (SQLite: ``synchronous=full`` for power-loss durability; PostgreSQL:
    ``schema=NAME``, ``migrate=false`` to require a schema migrated by ``chronik db migrate``,
    ``pool_min_size``, ``pool_max_size``, ``poll_interval``). With ``create=False`` a
    store that does not exist yet (a missing SQLite file) is not created: opening it raises
    StoreUnavailable ("no store at PATH"), as read-only tools want. Compositions take their
    stores as percent-encoded URLs (``chronik.store.composite_urls``): ``rw://?write=URL&
    read=URL`` (ReadWriteStore) and ``group://?name=URL&...&home=URL`` (GroupStore).
    """
    scheme, module, cls = load_adapter(url, _ADAPTERS, "store")
    if scheme in ("sqlite", "lmdb"):
        options = {**module.options_from_url(url), **options}
        if not create:
            options["create"] = False
    store: EventStore = cls(url, **options)
    return store
