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

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "lock_class",
    "migrate",
    "quote_schema",
    "schema_version",
    "split_url",
]

DEFAULT_SCHEMA: Final = "chronik"
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# ``{s}`` is replaced by the quoted schema name, ``{lock_class}`` by the advisory lock class of
# the schema's streams (see ``lock_class``). Expectation codes of the append functions:
# -1 ANY, -2 NO_STREAM, -3 STREAM_EXISTS, n >= 0 exactly n. o_status: 0 written, 1 the stream
# is not as expected (o_actual: its version, NULL when it has no events; nothing written).
_APPEND_TEMPLATE = """
CREATE OR REPLACE FUNCTION {s}.{name}(
    p_tenant text, p_domain text, p_aggregate_id text, p_expected bigint,
    {params}, p_recorded_at bigint,
    OUT o_status int, OUT o_actual bigint, OUT o_xid bigint, OUT {ids})
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sid bigint;
    v_ver bigint;
BEGIN
    -- Lock the stream before this transaction takes its id (a row lock would take one first):
    -- so a stream's events are in position order, whatever order writers queue in.
    PERFORM pg_advisory_xact_lock({lock_class},
        hashtext(p_tenant || '/' || p_domain || '/' || p_aggregate_id));
    SELECT s.id, s.version INTO v_sid, v_ver FROM {s}.streams s
     WHERE s.tenant = p_tenant AND s.domain = p_domain AND s.aggregate_id = p_aggregate_id;
    IF NOT FOUND THEN
        IF p_expected >= 0 OR p_expected = -3 THEN
            o_status := 1;
            RETURN;
        END IF;
        INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)
        VALUES (p_tenant, p_domain, p_aggregate_id, -1)
        RETURNING id INTO v_sid;
        v_ver := -1;
    END IF;
    IF v_ver >= 0 THEN
        o_actual := v_ver;
    END IF;
    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_ver < 0)
            OR (p_expected = -3 AND v_ver >= 0) OR p_expected = v_ver) THEN
        o_status := 1;
        RETURN;
    END IF;
    o_xid := pg_current_xact_id()::text::bigint;
    {insert}
    UPDATE {s}.streams SET version = v_ver + {count} WHERE id = v_sid;
    o_status := 0;
END
$fn$
"""
_COLUMNS = (
    "INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version, "
    "payload, metadata, content_type, recorded_at)"
)
# Many events: arrays, one element per event.
_APPEND_EVENTS = (
    _APPEND_TEMPLATE.replace("{name}", "append_events")
    .replace(
        "{params}",
        "p_event_ids text[], p_types text[], p_versions int[], p_payloads bytea[],\n"
        "    p_metadata bytea[], p_content_types text[]",
    )
    .replace("{ids}", "o_ids bigint[]")
    .replace("{count}", "cardinality(p_event_ids)")
    .replace(
        "{insert}",
        "WITH ins AS (\n        " + _COLUMNS + "\n"
        "        SELECT o_xid, v_sid, v_ver + u.o, u.e, u.t, u.v, u.p, u.m, u.c, p_recorded_at\n"
        "          FROM unnest(p_event_ids, p_types, p_versions, p_payloads, p_metadata,\n"
        "                      p_content_types) WITH ORDINALITY AS u(e, t, v, p, m, c, o)\n"
        "        RETURNING id)\n"
        "    SELECT array_agg(ins.id ORDER BY ins.id) INTO o_ids FROM ins;",
    )
)
# One event (the common case): scalars, cheaper to encode and to run.
_APPEND_EVENT = (
    _APPEND_TEMPLATE.replace("{name}", "append_event")
    .replace(
        "{params}",
        "p_event_id text, p_type text, p_version int, p_payload bytea,\n"
        "    p_metadata bytea, p_content_type text",
    )
    .replace("{ids}", "o_id bigint")
    .replace("{count}", "1")
    .replace(
        "{insert}",
        _COLUMNS + "\n    VALUES (o_xid, v_sid, v_ver + 1, p_event_id, p_type, p_version, "
        "p_payload,\n            p_metadata, p_content_type, p_recorded_at)\n"
        "    RETURNING id INTO o_id;",
    )
)

SCHEMA_VERSION: Final = 3
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
        _APPEND_EVENTS,
        _APPEND_EVENT,
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
}


def lock_class(schema: str) -> int:
    """The first key of the advisory locks that serialise writers of one stream of ``schema``."""
    return zlib.crc32(f"chronik:{schema}".encode()) & 0x7FFFFFFF


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
                sql = statement.replace("{s}", s).replace("{lock_class}", str(lock_class(schema)))
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
