"""Store URLs of compositions: ``rw://`` (ReadWriteStore) and ``group://`` (GroupStore).

The stores a composition is made of are URLs themselves, percent-encoded as query values
(``urllib.parse.quote(url, safe="")``), so their own query strings survive::

    rw://?write=postgresql%3A%2F%2Fapp%40primary%2Fdb&read=postgresql%3A%2F%2Fapp%40standby%2Fdb
        &max_lag=5&reads=log
    group://?orders=sqlite%3A%2F%2F%2Forders.db&billing=sqlite%3A%2F%2F%2Fbilling.db
        &home=sqlite%3A%2F%2F%2Fviews.db

``read`` may be given several times. Options given to ``open_store`` as keywords go to the
composition (``max_lag``, ``reads``, ``url``) or, the rest, to every store it opens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from chronik.errors import ConfigurationError
from chronik.store import open_store
from chronik.store.base import EventStore
from chronik.store.group import GroupStore
from chronik.store.rw import ReadWriteStore

__all__ = ["group_url", "open_group", "open_rw", "rw_url"]

_RW_OPTIONS = ("max_lag", "reads")


def _query(url: str, scheme: str) -> dict[str, list[str]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != scheme or parts.netloc or parts.path not in ("", "/"):
        raise ConfigurationError(
            f"invalid {scheme} URL {url[:80]!r}: expected {scheme}://?key=<percent-encoded URL>"
        )
    try:
        return parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"invalid {scheme} URL query: {exc}") from None


def _one(query: dict[str, list[str]], key: str, scheme: str) -> str:
    values = query.pop(key, [])
    if len(values) != 1 or not values[0]:
        raise ConfigurationError(f"{scheme}:// needs exactly one {key}=<percent-encoded URL>")
    return values[0]


def open_rw(url: str, **options: Any) -> EventStore:
    """The ReadWriteStore of an ``rw://`` URL (see the module docstring)."""
    query = _query(url, "rw")
    write = _one(query, "write", "rw")
    reads = query.pop("read", [])
    if not reads or not all(reads):
        raise ConfigurationError("rw:// needs at least one read=<percent-encoded URL>")
    own: dict[str, Any] = {}
    for key in _RW_OPTIONS:
        if key in query:
            own[key] = _one(query, key, "rw")
        if key in options:
            own[key] = options.pop(key)
    if query:
        raise ConfigurationError(f"unknown rw:// options: {', '.join(sorted(query))}")
    try:
        max_lag = float(own.get("max_lag", 5.0))
    except (TypeError, ValueError):
        raise ConfigurationError(f"max_lag must be seconds, not {own['max_lag']!r}") from None
    return ReadWriteStore(
        open_store(write, **options),
        [open_store(r, **options) for r in reads],
        max_lag=max_lag,
        reads=str(own.get("reads", "log")),
        url=url,
    )


def open_group(url: str, **options: Any) -> EventStore:
    """The GroupStore of a ``group://`` URL (see the module docstring)."""
    query = _query(url, "group")
    home = _one(query, "home", "group") if "home" in query else None
    members = {name: _one(query, name, "group") for name in list(query)}
    return GroupStore(
        {name: open_store(u, **options) for name, u in members.items()},
        home=None if home is None else open_store(home, **options),
        url=url,
    )


def rw_url(write: str, *read: str, max_lag: float | None = None, reads: str | None = None) -> str:
    """An ``rw://`` URL of these store URLs (percent-encoded)."""
    parts = [f"write={quote(write, safe='')}", *(f"read={quote(r, safe='')}" for r in read)]
    if max_lag is not None:
        parts.append(f"max_lag={max_lag:g}")
    if reads is not None:
        parts.append(f"reads={reads}")
    return "rw://?" + "&".join(parts)


def group_url(members: dict[str, str], home: str | None = None) -> str:
    """A ``group://`` URL of these member store URLs (percent-encoded)."""
    parts = [f"{name}={quote(u, safe='')}" for name, u in members.items()]
    if home is not None:
        parts.append(f"home={quote(home, safe='')}")
    return "group://?" + "&".join(parts)
