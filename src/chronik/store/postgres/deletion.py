"""Soft and hard deletes on the PostgreSQL store (chronik.store.deletion): the stream update
that follows a deletion event, in the unit's transaction."""

from __future__ import annotations

import asyncpg

from chronik.messages import AppendResult

__all__ = ["apply_delete"]


async def apply_delete(conn: asyncpg.Connection, s: str, done: AppendResult, hard: bool) -> None:
    """Hide the stream up to its deletion event ``done`` (tombstone it when ``hard``), unless
    events came after the event (a delete retried after the stream started again). The unit
    holds the stream's advisory lock (its deletion event is one of its appends). The stream's
    snapshot goes with what it summed up."""
    st = done.stream
    changed = await conn.fetchval(
        f"UPDATE {s}.streams SET truncate_before = $1, tombstone = tombstone OR $2 "
        "WHERE tenant = $3 AND domain = $4 AND aggregate_id = $5 AND version = $6 RETURNING 1",
        done.last_sequence + 1,
        hard,
        st.tenant,
        st.domain,
        st.aggregate_id,
        done.last_sequence,
    )
    if changed:  # the snapshot is a state of what is gone now
        await conn.execute(
            f"DELETE FROM {s}.snapshots WHERE tenant = $1 AND domain = $2 AND aggregate_id = $3",
            st.tenant,
            st.domain,
            st.aggregate_id,
        )
