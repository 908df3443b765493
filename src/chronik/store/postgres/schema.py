"""The PostgreSQL store's schema, its versioned migrations, and its URL options.

Every object lives in one schema (``?schema=name``, default ``chronik``): the name is validated
as ``[a-z_][a-z0-9_]{0,62}`` and double-quoted; it is the only identifier ever put into SQL text.

Positions are ``(xid, id)``: the writer's transaction id (``pg_current_xact_id()``) and the row's
identity. Readers deliver only rows whose xid is below the oldest transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``), in ``(xid, id)`` order, so a transaction that
commits late can never be passed by a reader.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chronik.errors import ConfigurationError
from chronik.store.postgres.append_v11 import MIGRATION_11
from chronik.store.postgres.append_v12 import MIGRATION_12
from chronik.store.postgres.functions import (
    APPEND_EVENT,
    APPEND_EVENT_V6,
    APPEND_EVENTS,
    APPEND_EVENTS_V6,
    APPEND_TAGGED,
    APPEND_TAGGED_ONE,
    DROP_V1_FUNCTIONS,
)
from chronik.store.postgres.tenancy import TENANT_COLUMN_MIGRATION, TENANT_MIGRATION

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "dcb_lock_class",
    "lock_class",
    "migrate",
    "quote_schema",
    "schema_version",
    "split_url",
]

DEFAULT_SCHEMA: Final = "chronik"
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

SCHEMA_VERSION: Final = 12
MIGRATIONS: Final[dict[int, list[str]]] = {
    1: [
        """CREATE TABLE {s}.streams (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant text NOT NULL,
            domain text NOT NULL,
            aggregate_id text NOT NULL,
            version bigint NOT NULL,
            CONSTRAINT streams_identity_key UNIQUE (tenant, domain, aggregate_id))""",
        """CREATE TABLE {s}.events (
            xid bigint NOT NULL,
            id bigint GENERATED ALWAYS AS IDENTITY,
            stream_id bigint NOT NULL,
            sequence bigint NOT NULL,
            event_id text NOT NULL,
            type text NOT NULL,
            schema_version integer NOT NULL,
            payload bytea NOT NULL,
            metadata bytea,
            content_type text,
            recorded_at bigint NOT NULL,
            CONSTRAINT events_position_key PRIMARY KEY (xid, id),
            CONSTRAINT events_stream_sequence_key UNIQUE (stream_id, sequence),
            CONSTRAINT events_event_id_key UNIQUE (event_id))""",
        """CREATE TABLE {s}.snapshots (
            tenant text NOT NULL,
            domain text NOT NULL,
            aggregate_id text NOT NULL,
            sequence bigint NOT NULL,
            type text NOT NULL,
            schema_version integer NOT NULL,
            state bytea NOT NULL,
            taken_at bigint NOT NULL,
            PRIMARY KEY (tenant, domain, aggregate_id))""",
        """CREATE TABLE {s}.checkpoints (
            name text NOT NULL,
            partition integer NOT NULL,
            commit_pos bigint NOT NULL,
            index_pos bigint NOT NULL,
            epoch bigint NOT NULL,
            updated_at bigint NOT NULL,
            PRIMARY KEY (name, partition))""",
        # the append functions (append_event, append_events) were created here; the latest
        # migration that changes them (re)creates them (functions.py)
    ],
    # chronik's own tables (chronik.store.tables.SYSTEM_TABLES), created at run time before:
    # IF NOT EXISTS keeps the ones an older chronik made (same columns, same index names)
    2: [
        """CREATE TABLE IF NOT EXISTS {s}.chronik_projections (
            name text, version bigint, generation bigint, building bigint,
            building_version bigint, state text, position text, build_position text, head text,
            lag_events bigint, lag_seconds double precision, events_per_s double precision,
            processed bigint, last_error text, heartbeat bigint, owner text,
            PRIMARY KEY (name))""",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_projection_requests (
            id text, projection text, action text, arg text, created_at bigint,
            PRIMARY KEY (id))""",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_dead_letters (
            projection text, event_id text, generation bigint, position bigint,
            position_index bigint, stream text, sequence bigint, type text, error text,
            attempts bigint, blocked bigint, parked_at bigint,
            PRIMARY KEY (projection, generation, event_id))""",
        "CREATE INDEX IF NOT EXISTS chronik_dead_letters__projection_stream "
        "ON {s}.chronik_dead_letters (projection, stream)",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_leases (
            name text, partition bigint, owner text, epoch bigint, expires_at bigint,
            PRIMARY KEY (name, partition))""",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_projection_plans (
            name text, generation bigint, version bigint, partitions bigint, building bigint,
            building_version bigint, building_partitions bigint, switching bigint, retired text,
            PRIMARY KEY (name))""",
        """CREATE TABLE IF NOT EXISTS {s}.outbox_messages (
            id text, kind text, topic text, body bytea, headers text, msg_key text, state text,
            attempts bigint, next_attempt_us bigint, last_error text, created_us bigint,
            sent_us bigint,
            PRIMARY KEY (id))""",
        "CREATE INDEX IF NOT EXISTS outbox_messages__state_created_us "
        "ON {s}.outbox_messages (state, created_us)",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_inbox (
            consumer text, message_id text, topic text,
            PRIMARY KEY (consumer, message_id))""",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_saga_record (
            owner text, command_id text, instance_id text, event_id text, command text,
            outcome text, detail text, recorded_at bigint,
            PRIMARY KEY (owner, command_id))""",
        "CREATE INDEX IF NOT EXISTS chronik_saga_record__owner_event_id "
        "ON {s}.chronik_saga_record (owner, event_id)",
        """CREATE TABLE IF NOT EXISTS {s}.chronik_replay_marks (
            projection text, partition bigint, generation bigint, position text, refuse text,
            PRIMARY KEY (projection, partition, generation))""",
    ],
    # leases carry the holder's version (chronik.store.leases), no longer in the partition column
    3: [
        "ALTER TABLE {s}.chronik_leases ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0"
    ],
    # DCB tags: the event's sorted tags joined by one space (NULL: none) and the tag index,
    # written by the append functions in the event's transaction; the functions also take the
    # DCB keys' shared locks (functions.py)
    4: [
        "ALTER TABLE {s}.events ADD COLUMN tags text",
        """CREATE TABLE {s}.event_tags (
            tag text NOT NULL,
            xid bigint NOT NULL,
            id bigint NOT NULL,
            CONSTRAINT event_tags_key PRIMARY KEY (tag, xid, id))""",
        *DROP_V1_FUNCTIONS,
        APPEND_EVENTS,
        APPEND_EVENT,
    ],
    # a tagged append (``store.append_tagged``) in one statement: locks, checks, writes
    # (functions.py); the other functions stay as they are
    5: [APPEND_TAGGED],
    # deletion (chronik.store.deletion): the first sequence a stream still shows (soft deletes
    # and truncation move it; the version keeps counting), the hard-delete tombstone, and the
    # append functions that honour both (functions.py)
    6: [
        "ALTER TABLE {s}.streams ADD COLUMN truncate_before bigint NOT NULL DEFAULT 0",
        "ALTER TABLE {s}.streams ADD COLUMN tombstone boolean NOT NULL DEFAULT false",
        # retention (chronik.store.retention): the stream's max age (seconds) and max count
        "ALTER TABLE {s}.streams ADD COLUMN max_age double precision",
        "ALTER TABLE {s}.streams ADD COLUMN max_count bigint",
        APPEND_EVENTS_V6,
        APPEND_EVENT_V6,
    ],
    # a single-event tagged append (a DCB decision) with scalar arguments: append_tagged_one
    # (functions.py); append_tagged stays for runs of several events
    7: [APPEND_TAGGED_ONE],
    # the archive (chronik.store.archive_ops): the hot log's low bound, every event at or
    # before it dropped once the archive sealed it
    8: [
        """CREATE TABLE {s}.archive_floor (
            id integer PRIMARY KEY CHECK (id = 1),
            xid bigint NOT NULL,
            position_id bigint NOT NULL)""",
    ],
    # tenants (a separate step from 8): the events' tenant column and index, row-level
    # security, tagged appends' conditions per tenant (tenancy.py)
    9: TENANT_MIGRATION,
    # the append functions write each event's tenant; the trigger of 9 runs only for an insert
    # that leaves it out (tenancy.py)
    10: TENANT_COLUMN_MIGRATION,
    # every advisory lock in (class, key text) order, a tagged append's keys sorted by the
    # caller; the stream append functions in fewer statements (append_v11.py)
    11: MIGRATION_11,
    # the stream append functions: a NO_STREAM append looks for its stream row before any
    # update, an untagged batch skips the tag insert (append_v12.py)
    12: MIGRATION_12,
}


def lock_class(schema: str) -> int:
    """The first key of the advisory locks that serialise writers of one stream of ``schema``."""
    return zlib.crc32(f"chronik:{schema}".encode()) & 0x7FFFFFFF


def dcb_lock_class(schema: str) -> int:
    """The first key of the advisory locks on the DCB keys (tags, types, ``*``) of ``schema``:
    writers take them shared, append conditions exclusive (functions.py)."""
    key = zlib.crc32(f"chronik-dcb:{schema}".encode()) & 0x7FFFFFFF
    return key if key != lock_class(schema) else key ^ 1


def quote_schema(name: str) -> str:
    """The schema name double-quoted, after checking it is a plain lowercase identifier."""
    if not isinstance(name, str) or not _SCHEMA_RE.fullmatch(name):
        raise ConfigurationError(f"invalid schema name {name!r}: expected [a-z_][a-z0-9_]{{0,62}}")
    return f'"{name}"'


async def schema_version(conn: asyncpg.Connection, schema: str) -> int:
    """The schema's applied version (0 when it has none)."""
    exists = await conn.fetchval(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 "
        "AND table_name = 'schema_migrations'",
        schema,
    )
    if not exists:
        return 0
    version = await conn.fetchval(
        f"SELECT max(version) FROM {quote_schema(schema)}.schema_migrations"
    )
    return int(version or 0)


async def migrate(
    conn: asyncpg.Connection,
    schema: str,
    migrations: Mapping[int, Sequence[str]] = MIGRATIONS,
    table: str = "schema_migrations",
) -> tuple[int, int]:
    """Bring ``schema`` to the latest of ``migrations`` (the store's by default) in one
    transaction, recording applied versions in ``table``; returns (before, after).

    An advisory lock keyed on the schema name serialises concurrent migrators (the store's and
    the PostgreSQL transport's, which keeps its own ``transport_migrations``).
    """
    s = quote_schema(schema)
    latest = max(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('chronik:' || $1))", schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.{table} (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {s}.{table}"))
        if current > latest:
            raise ConfigurationError(
                f"schema {schema} has version {current}, newer than this chronik "
                f"({latest}): upgrade chronik"
            )
        for version in range(current + 1, latest + 1):
            for statement in migrations[version]:
                sql = (
                    statement.replace("{s}", s)
                    .replace("{lock_class}", str(lock_class(schema)))
                    .replace("{dcb_lock_class}", str(dcb_lock_class(schema)))
                )
                await conn.execute(sql)
            await conn.execute(f"INSERT INTO {s}.{table} (version) VALUES ($1)", version)
    return current, latest


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "schema": str,
    "migrate": _bool,
    "pool_min_size": int,
    "pool_max_size": int,
    "poll_interval": float,
    "max_payload_bytes": int,
    "max_append_events": int,
    "tenant": str,
}


def split_url(
    url: str, known: Mapping[str, Callable[[str], Any]] = _OPTIONS, what: str = "store"
) -> tuple[str, dict[str, Any]]:
    """The driver's DSN (chronik's options removed) and chronik's ``known`` options from the
    query (the store's by default; the PostgreSQL transport passes its own)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a postgresql URL: {url!r}")
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in known:
            try:
                options[key] = known[key](value)
            except ValueError:
                raise ConfigurationError(f"invalid value for {key!r} in the {what} URL") from None
        else:
            rest.append((key, value))
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return dsn, options
