"""The Redis store's URL and options, and what the server's AOF settings promise.

``redis://[user:pass@]host:port/db?prefix=NAME&appendfsync=always&require_aof=true``: the
store's own query parameters are taken out, the driver's (``socket_timeout``,
``socket_connect_timeout``, ``socket_keepalive``, ``health_check_interval``, ``db``) go to it
with the URL; any other is refused. Keywords given to ``open_store`` win over the query string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chronik.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "FSYNC_POLICIES", "RedisOptions", "durability_problem"]

DEFAULT_PREFIX: Final = "chronik"
#: appendfsync policies, weakest first.
FSYNC_POLICIES: Final = ("no", "everysec", "always")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_OWN: Final = frozenset(
    {
        "prefix",
        "appendfsync",
        "require_aof",
        "pool_max_size",
        "poll_interval",
        "max_payload_bytes",
        "max_append_events",
    }
)


#: Query parameters passed on to the driver (redis-py) with the URL.
_DRIVER: Final = frozenset(
    {"db", "socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval"}
)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _number(name: str, value: Any, kind: type[int] | type[float], low: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None
    if not number >= low:
        raise ConfigurationError(f"{name} must be at least {low}, not {value!r}")
    return number


@dataclass(frozen=True)
class RedisOptions:
    """The checked options of one store."""

    server_url: str  # what the driver gets: the URL without the store's own parameters
    prefix: str = DEFAULT_PREFIX
    appendfsync: str | None = None
    require_aof: bool = False
    pool_max_size: int = 32
    poll_interval: float = 0.2
    limits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str, options: dict[str, Any]) -> RedisOptions:
        """The options of ``url`` and the keywords (which win); ConfigurationError naming the
        option that is out of range."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ConfigurationError(
                f"invalid Redis URL: expected redis://host:port/db, got {url!r}"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        given: dict[str, Any] = {k: v for k, v in query if k in _OWN}
        given.update(options)
        unknown = (set(given) - _OWN) | ({k for k, _ in query} - _OWN - _DRIVER)
        if unknown:
            raise ConfigurationError(f"unknown Redis store option(s): {', '.join(sorted(unknown))}")
        rest = urlencode([(k, v) for k, v in query if k not in _OWN])
        server_url = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
        prefix = str(given.get("prefix", DEFAULT_PREFIX))
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigurationError(
                f"invalid prefix {prefix!r}: expected [A-Za-z0-9][A-Za-z0-9_.:-]{{0,63}}"
            )
        fsync = given.get("appendfsync")
        if fsync is not None and fsync not in ("always", "everysec"):
            raise ConfigurationError(f"appendfsync must be 'always' or 'everysec', not {fsync!r}")
        limits: dict[str, int] = {
            k: _number(k, given[k], int, 1)
            for k in ("max_payload_bytes", "max_append_events")
            if k in given
        }
        return cls(
            server_url,
            prefix,
            fsync,
            _flag("require_aof", given.get("require_aof", False)),
            _number("pool_max_size", given.get("pool_max_size", 32), int, 2),
            _number("poll_interval", given.get("poll_interval", 0.2), float, 0.001),
            limits,
        )


def durability_problem(appendonly: str, appendfsync: str, required: str | None) -> str | None:
    """Why a server with these settings may lose acknowledged appends (None: it will not, as
    far as ``required`` asks: ``always`` or ``everysec``, default any AOF at all)."""
    if appendonly != "yes":
        return "AOF is off (appendonly no): a restart loses every write since the last RDB save"
    strength = FSYNC_POLICIES.index(appendfsync) if appendfsync in FSYNC_POLICIES else -1
    if required is not None and strength < FSYNC_POLICIES.index(required):
        return f"the server has appendfsync {appendfsync}, the store requires {required}"
    return None
