"""The raw PostgreSQL baseline that checks expectations (bench.raw_pg.CheckedWriter) does the
same work as chronik's append: it writes only from the expected version, and all or nothing."""

from __future__ import annotations

import uuid

import pytest

from bench import raw_pg
from chronik.testing.services import PostgresService


async def test_the_checked_raw_writer_refuses_a_wrong_expectation_and_writes_nothing(
    postgres_server: PostgresService,
) -> None:
    """A new stream is created once; later appends succeed only from the stream's version,
    and a refused append leaves the stream and the events as they were."""
    if not postgres_server.running:
        postgres_server.start()
    schema = f"raw_{uuid.uuid4().hex[:8]}"
    conn = await raw_pg.connect(postgres_server.url("postgres"), schema)
    try:
        writer = await raw_pg.CheckedWriter.prepare(conn, schema)
        await writer.append(7, 0, [{"n": 0}, {"n": 1}])  # a new stream: versions 0 and 1
        with pytest.raises(raw_pg.ExpectationFailed):
            await writer.append(7, 0, [{"n": 9}])  # new again: it exists
        await writer.append(7, 2, [{"n": 2}])  # from version 1
        for stale in (2, 1, 5):
            with pytest.raises(raw_pg.ExpectationFailed):
                await writer.append(7, stale, [{"n": 9}] * 10)
        s = f'"{schema}"'
        assert await conn.fetchval(f"SELECT version FROM {s}.raw_streams WHERE id = 7") == 2
        rows = await conn.fetch(f"SELECT sequence FROM {s}.raw_events ORDER BY sequence")
        assert [r["sequence"] for r in rows] == [0, 1, 2]
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
