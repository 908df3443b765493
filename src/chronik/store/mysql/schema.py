"""The MySQL store's URL, its versioned migrations and the migrator.

Everything lives in one database, the URL's path (``mysql://user:pass@host:3306/chronik``): its
name is validated as ``[a-z_][a-z0-9_]{0,62}`` and backquoted, the only identifier from outside
ever put into SQL text. The store creates the database on open when it is missing (``CREATE
DATABASE IF NOT EXISTS``, as the PostgreSQL store creates its schema).

Text compares and sorts by code point without trailing-space padding: ``utf8mb4_nopad_bin`` on
MariaDB, ``utf8mb4_0900_bin`` on MySQL 8 (``{collation}`` in the statements), so ``'a'`` and
``'a '`` are different keys and read-model text sorts as on SQLite and PostgreSQL.

``log_head`` is the one-row position counter of the gap-safe design (see ``chronik.store.mysql``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from chronik.errors import ConfigurationError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "MySQLOptions",
    "migrate",
    "quote_database",
    "schema_version",
]

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OPTS: Final = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"

SCHEMA_VERSION: Final = 1
MIGRATIONS: Final[dict[int, list[str]]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS streams ("
        "id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
        "tenant VARCHAR(64) NOT NULL, domain VARCHAR(64) NOT NULL, "
        "aggregate_id VARCHAR(256) NOT NULL, version BIGINT NOT NULL, "
        "UNIQUE KEY streams_identity (tenant, domain, aggregate_id))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS events ("
        "`position` BIGINT NOT NULL PRIMARY KEY, stream_id BIGINT NOT NULL, "
        "`sequence` BIGINT NOT NULL, event_id VARCHAR(64) NOT NULL, "
        "`type` VARCHAR(128) NOT NULL, schema_version INT NOT NULL, payload LONGBLOB NOT NULL, "
        "metadata LONGBLOB NULL, content_type TEXT NULL, recorded_at BIGINT NOT NULL, "
        "tags TEXT NULL, "
        "UNIQUE KEY events_stream_sequence (stream_id, `sequence`), "
        "UNIQUE KEY events_event_id (event_id), "
        "KEY events_type (`type`, `position`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS event_tags ("
        "tag VARCHAR(128) NOT NULL, `position` BIGINT NOT NULL, "
        "PRIMARY KEY (tag, `position`))" + _OPTS,
        # the position counter: one row, updated (row-locked) last by every writing transaction
        "CREATE TABLE IF NOT EXISTS log_head (id TINYINT NOT NULL PRIMARY KEY, "
        "`last` BIGINT NOT NULL)" + _OPTS,
        "INSERT IGNORE INTO log_head (id, `last`) VALUES (1, 0)",
        "CREATE TABLE IF NOT EXISTS snapshots ("
        "tenant VARCHAR(64) NOT NULL, domain VARCHAR(64) NOT NULL, "
        "aggregate_id VARCHAR(256) NOT NULL, `sequence` BIGINT NOT NULL, `type` TEXT NOT NULL, "
        "schema_version INT NOT NULL, state LONGBLOB NOT NULL, taken_at BIGINT NOT NULL, "
        "PRIMARY KEY (tenant, domain, aggregate_id))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS checkpoints ("
        "name VARCHAR(128) NOT NULL, `partition` BIGINT NOT NULL, commit_pos BIGINT NOT NULL, "
        "index_pos BIGINT NOT NULL, epoch BIGINT NOT NULL, updated_at BIGINT NOT NULL, "
        "PRIMARY KEY (name, `partition`))" + _OPTS,
        # chronik's own tables (chronik.store.system_tables), as tables.column_type maps them
        "CREATE TABLE IF NOT EXISTS chronik_projections (`name` VARCHAR(256) NOT NULL, "
        "`version` BIGINT, `generation` BIGINT, `building` BIGINT, `building_version` BIGINT, "
        "`state` LONGTEXT, `position` LONGTEXT, `build_position` LONGTEXT, `head` LONGTEXT, "
        "`lag_events` BIGINT, `lag_seconds` DOUBLE, `events_per_s` DOUBLE, `processed` BIGINT, "
        "`last_error` LONGTEXT, `heartbeat` BIGINT, `owner` LONGTEXT, "
        "PRIMARY KEY (`name`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_projection_requests (`id` VARCHAR(256) NOT NULL, "
        "`projection` LONGTEXT, `action` LONGTEXT, `arg` LONGTEXT, `created_at` BIGINT, "
        "PRIMARY KEY (`id`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_dead_letters (`projection` VARCHAR(256) NOT NULL, "
        "`event_id` VARCHAR(256) NOT NULL, `generation` BIGINT NOT NULL, `position` BIGINT, "
        "`position_index` BIGINT, `stream` VARCHAR(256), `sequence` BIGINT, `type` LONGTEXT, "
        "`error` LONGTEXT, `attempts` BIGINT, `blocked` BIGINT, `parked_at` BIGINT, "
        "PRIMARY KEY (`projection`, `generation`, `event_id`), "
        "KEY chronik_dead_letters__projection_stream (`projection`, `stream`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_leases (`name` VARCHAR(256) NOT NULL, "
        "`partition` BIGINT NOT NULL, `owner` LONGTEXT, `epoch` BIGINT, `expires_at` BIGINT, "
        "`version` BIGINT, PRIMARY KEY (`name`, `partition`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_projection_plans (`name` VARCHAR(256) NOT NULL, "
        "`generation` BIGINT, `version` BIGINT, `partitions` BIGINT, `building` BIGINT, "
        "`building_version` BIGINT, `building_partitions` BIGINT, `switching` BIGINT, "
        "`retired` LONGTEXT, PRIMARY KEY (`name`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS outbox_messages (`id` VARCHAR(256) NOT NULL, "
        "`kind` LONGTEXT, `topic` LONGTEXT, `body` LONGBLOB, `headers` LONGTEXT, "
        "`msg_key` LONGTEXT, `state` VARCHAR(256), `attempts` BIGINT, `next_attempt_us` BIGINT, "
        "`last_error` LONGTEXT, `created_us` BIGINT, `sent_us` BIGINT, PRIMARY KEY (`id`), "
        "KEY outbox_messages__state_created_us (`state`, `created_us`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_inbox (`consumer` VARCHAR(256) NOT NULL, "
        "`message_id` VARCHAR(256) NOT NULL, `topic` LONGTEXT, "
        "PRIMARY KEY (`consumer`, `message_id`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_saga_record (`owner` VARCHAR(256) NOT NULL, "
        "`command_id` VARCHAR(256) NOT NULL, `instance_id` LONGTEXT, `event_id` VARCHAR(256), "
        "`command` LONGTEXT, `outcome` LONGTEXT, `detail` LONGTEXT, `recorded_at` BIGINT, "
        "PRIMARY KEY (`owner`, `command_id`), "
        "KEY chronik_saga_record__owner_event_id (`owner`, `event_id`))" + _OPTS,
        "CREATE TABLE IF NOT EXISTS chronik_replay_marks (`projection` VARCHAR(256) NOT NULL, "
        "`partition` BIGINT NOT NULL, `generation` BIGINT NOT NULL, `position` LONGTEXT, "
        "`refuse` LONGTEXT, PRIMARY KEY (`projection`, `partition`, `generation`))" + _OPTS,
    ],
}


def quote_database(name: object) -> str:
    """The database name backquoted, after checking it is a plain lowercase identifier."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid database name {name!r}: expected [a-z_][a-z0-9_]{{0,62}}"
        )
    return f"`{name}`"


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


#: chronik's options in the URL's query string (keywords to the store win over them).
_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "migrate": _bool,
    "pool_min_size": int,
    "pool_max_size": int,
    "poll_interval": float,
    "lock_wait_timeout": int,
    "idle_transaction_timeout": int,
    "connect_timeout": float,
    "max_payload_bytes": int,
    "max_append_events": int,
}
_DEFAULTS: Final[dict[str, Any]] = {
    "migrate": True,
    "pool_min_size": 1,
    "pool_max_size": 16,
    "poll_interval": 0.05,
    "lock_wait_timeout": 5,
    "idle_transaction_timeout": 30,
    "connect_timeout": 10.0,
}


class MySQLOptions(NamedTuple):
    """Where the server is, which database, and the store's settings."""

    host: str
    port: int
    user: str
    password: str
    database: str
    settings: dict[str, Any]  # _OPTIONS with defaults applied
    limits: dict[str, int]  # max_payload_bytes / max_append_events, for EventStore

    @classmethod
    def parse(cls, url: str, options: Mapping[str, Any]) -> MySQLOptions:
        """The options of ``mysql://user:pass@host:port/database?...`` (also ``mariadb://``);
        keywords in ``options`` win over the query string. ConfigurationError when bad."""
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ConfigurationError(f"not a mysql:// or mariadb:// URL: {url!r}")
        database = unquote(parts.path.lstrip("/"))
        quote_database(database)
        settings: dict[str, Any] = dict(_DEFAULTS)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _OPTIONS:
                raise ConfigurationError(f"unknown option {key!r} in the store URL")
            try:
                settings[key] = _OPTIONS[key](value)
            except ValueError:
                raise ConfigurationError(f"invalid value for {key!r} in the store URL") from None
        for key, value in options.items():
            if key not in _OPTIONS:
                raise ConfigurationError(f"unknown store option {key!r}")
            settings[key] = value
        limits: dict[str, int] = {
            k: int(settings.pop(k))
            for k in ("max_payload_bytes", "max_append_events")
            if k in settings
        }
        if not 1 <= int(settings["pool_min_size"]) <= int(settings["pool_max_size"]):
            raise ConfigurationError("need 1 <= pool_min_size <= pool_max_size")
        for key in ("lock_wait_timeout", "idle_transaction_timeout"):
            if int(settings[key]) < 0:
                raise ConfigurationError(f"{key} must be >= 0 (0: the server's default)")
        try:
            port = parts.port or 3306
        except ValueError:
            raise ConfigurationError(f"invalid port in the store URL {url!r}") from None
        return cls(
            parts.hostname or "127.0.0.1",
            port,
            unquote(parts.username or "root"),
            unquote(parts.password or ""),
            database,
            settings,
            limits,
        )


async def schema_version(fetch: Callable[..., Any]) -> int:
    """The applied version of the connected database (0 when it has none)."""
    rows = await fetch(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
        "AND table_name = 'schema_migrations'"
    )
    if not rows[0][0]:
        return 0
    rows = await fetch("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(rows[0][0])


async def migrate(
    fetch: Callable[..., Any], database: str, collation: str, wait: int = 300
) -> tuple[int, int]:
    """Bring the connected database to SCHEMA_VERSION; returns (before, after).

    ``fetch(sql, args)`` runs one statement on one connection. A named lock (``GET_LOCK``,
    keyed on the database) serialises concurrent migrators. MySQL commits each DDL statement
    on its own, so every statement is idempotent (``IF NOT EXISTS``, ``INSERT IGNORE``) and a
    version is recorded once all of its statements ran: an interrupted migration reruns whole.
    """
    lock = f"chronik:migrate:{database}"
    got = await fetch("SELECT GET_LOCK(%s, %s)", (lock, wait))
    if got[0][0] != 1:
        raise ConfigurationError(f"could not take the migration lock of {database}")
    try:
        await fetch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INT NOT NULL PRIMARY KEY, "
            "applied_at BIGINT NOT NULL) ENGINE=InnoDB"
        )
        current = await schema_version(fetch)
        if current > SCHEMA_VERSION:
            raise ConfigurationError(
                f"database {database} has schema version {current}, newer than this chronik "
                f"({SCHEMA_VERSION}): upgrade chronik"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await fetch(statement.replace("{collation}", collation))
            await fetch(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, time.time_ns() // 1000),
            )
        return current, SCHEMA_VERSION
    finally:
        await fetch("SELECT RELEASE_LOCK(%s)", (lock,))
