"""Event store adapters, chosen by URL; ``open_store`` is the way in.

Adapters are imported by path (``chronik.store.sqlite``) and only when their URL is used, so a
backend whose extra is not installed costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from chronik.errors import ConfigurationError, MissingExtraError
from chronik.store.base import EventStore, UnitOfWork

__all__ = ["EventStore", "UnitOfWork", "open_store"]

# scheme -> (module, class, extra that provides its driver, driver module)
_ADAPTERS: dict[str, tuple[str, str, str | None, str | None]] = {
    "memory": ("chronik.store.memory", "MemoryEventStore", None, None),
    "sqlite": ("chronik.store.sqlite", "SQLiteEventStore", None, None),
    "postgresql": ("chronik.store.postgres", "PostgresEventStore", "postgres", "asyncpg"),
    "postgres": ("chronik.store.postgres", "PostgresEventStore", "postgres", "asyncpg"),
}


def open_store(url: str, **options: Any) -> EventStore:
    """The event store for ``url`` (``memory://``, ``sqlite:///path.db``, ``postgresql://...``).

    Use it as ``async with open_store(url) as store``; it opens on first use otherwise. Options
    in the URL's query string or as keywords: ``max_payload_bytes``, ``max_append_events`` and
    the adapter's own (SQLite: ``synchronous=full`` for power-loss durability; PostgreSQL:
    ``schema=NAME``, ``migrate=false`` to require a schema migrated by ``chronik db migrate``,
    ``pool_min_size``, ``pool_max_size``, ``poll_interval``).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid store URL {url!r}: expected memory://, sqlite:///path or postgresql://..."
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _ADAPTERS:
        raise ConfigurationError(
            f"unknown store scheme {scheme!r} in {url!r}: expected one of "
            + ", ".join(sorted(_ADAPTERS))
        )
    module_name, class_name, extra, driver = _ADAPTERS[scheme]
    if driver is not None:
        try:
            importlib.import_module(driver)
        except ImportError:
            raise MissingExtraError(extra or scheme, driver) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigurationError(f"the {scheme} store is not available in this version") from None
    if scheme == "sqlite":
        options = {**module.options_from_url(url), **options}
    cls: Callable[..., EventStore] = getattr(module, class_name)
    return cls(url, **options)
