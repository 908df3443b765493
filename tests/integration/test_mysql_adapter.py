"""The MySQL adapter's own behaviour on a real MariaDB: its migrations (the system tables as the
specs say), URL options, units bigger than one packet, text keys without padding, and outages."""

from __future__ import annotations

from typing import Any

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.mysql import MySQLEventStore
from chronik.store.mysql.write import BATCH_BYTES
from chronik.store.tables import SYSTEM_TABLES, TableSpec, TableWrite
from chronik.testing.service_base import free_port
from tests.integration.test_mysql_races import rows

pytestmark = pytest.mark.timeout(120)

_TYPES = {
    "INTEGER": ("bigint",),
    "REAL": ("double",),
    "TEXT": ("longtext", "varchar"),
    "BLOB": ("longblob", "varbinary"),
}


async def test_system_tables_are_migrated_as_their_specs_say(mysql_url: str) -> None:
    """Every table of SYSTEM_TABLES exists after open with the spec's columns, in order, of
    the mapped types (schema_migrations records the version)."""
    async with chronik.open_store(mysql_url):
        pass
    for spec in SYSTEM_TABLES:
        cols = await rows(
            mysql_url,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = DATABASE() AND table_name = '{spec.name}' "
            "ORDER BY ordinal_position",
        )
        assert [c for c, _ in cols] == [c for c, _ in spec.columns], spec.name
        for (column, sql_type), (_, found) in zip(spec.columns, cols, strict=True):
            assert found in _TYPES[sql_type], (spec.name, column, found)
    assert await rows(mysql_url, "SELECT version FROM schema_migrations") == [(1,)]


async def test_url_options_and_scheme(mysql_url: str) -> None:
    """mariadb:// opens the same store; bad database names and unknown options are
    ConfigurationError; the repr hides a password."""
    async with chronik.open_store(mysql_url.replace("mysql://", "mariadb://")) as store:
        assert isinstance(store, MySQLEventStore) and store.mariadb
        assert store.collation == "utf8mb4_nopad_bin"
    for bad in ("mysql://root@127.0.0.1/Bad-Name", "mysql://root@127.0.0.1/", f"{mysql_url}?x=1"):
        with pytest.raises(chronik.ConfigurationError):
            chronik.open_store(bad)
    with pytest.raises(chronik.ConfigurationError):
        chronik.open_store(mysql_url, pool_min_size=3, pool_max_size=2)
    secret = chronik.open_store("mysql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in repr(secret) and "***" in repr(secret)


async def test_migrate_false_refuses_an_unmigrated_database(mysql_url: str) -> None:
    """``migrate=false`` on a database that was never migrated: ConfigurationError, nothing
    created; the same URL with migrations then opens."""
    with pytest.raises(chronik.ConfigurationError):
        await chronik.open_store(f"{mysql_url}?migrate=false").open()
    async with chronik.open_store(mysql_url):
        pass
    async with chronik.open_store(f"{mysql_url}?migrate=false") as store:
        assert await store.head() is None


async def test_server_down_is_store_unavailable() -> None:
    """Opening a store whose server does not answer raises StoreUnavailable naming it."""
    store = chronik.open_store(f"mysql://root@127.0.0.1:{free_port()}/db?connect_timeout=2")
    with pytest.raises(chronik.StoreUnavailable) as err:
        await store.open()
    assert "127.0.0.1" in str(err.value)


async def test_a_unit_bigger_than_a_packet_is_split_and_stays_atomic(mysql_url: str) -> None:
    """A unit of 24 events of ~1 MB (past the server's 16 MiB max_allowed_packet) is sent in
    several batches inside one transaction: stored whole, read back byte for byte."""
    blob = b"\x00\xff'\\" * 250_000
    events = [EventData("big", blob, content_type="application/octet-stream") for _ in range(24)]
    assert sum(len(e.payload) for e in events) > 2 * BATCH_BYTES  # type: ignore[arg-type]
    async with chronik.open_store(mysql_url) as store:
        s = StreamId("big", "b")
        result = await store.append(s, events)
        assert result.last_sequence == 23
        got = [e async for e in store.read_stream(s)]
        assert [e.payload for e in got] == [blob] * 24
        assert [e.position.commit for e in got] == list(range(1, 25))


async def test_text_keys_compare_by_code_point_without_padding(mysql_url: str) -> None:
    """Read-model TEXT keys 'a' and 'a ' are two rows, and text sorts by code point (as on
    SQLite and PostgreSQL), even in a unit that creates the table."""
    spec = TableSpec("words", (("w", "TEXT"), ("n", "INTEGER")), ("w",))
    words = ["a", "a ", "B", "é", "z"]
    async with chronik.open_store(mysql_url) as store:
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", "words", spec=spec)])
            tx.write_tables(
                [TableWrite.upsert("words", {"w": w, "n": i}, ("w",)) for i, w in enumerate(words)]
            )
        got: list[dict[str, Any]] = await store.read_table("words", order_by=("w",))
        assert [r["w"] for r in got] == sorted(words)
        assert [r["w"] for r in await store.read_table("words", {"w": "a"})] == ["a"]
