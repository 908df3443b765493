"""What a unit of work writes beside its events on MySQL: read-model rows and leases
(``tables``), checkpoints fenced by their epoch, and snapshots that never go back.

Both are one ``INSERT ... ON DUPLICATE KEY UPDATE`` whose assignments keep the stored row when it
wins (a newer epoch, a higher snapshot sequence); MySQL applies the assignments left to right,
so the column that decides (``epoch``, ``sequence``) is assigned last.
"""

from __future__ import annotations

from typing import Final

import asyncmy

from chronik.errors import CheckpointFenced
from chronik.store.mysql.pool import run
from chronik.store.mysql.tables import write_leases, write_tables
from chronik.store.records import FaultHook, TableWrite, WriteUnit

__all__ = ["side_writes"]

_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (name, `partition`, commit_pos, index_pos, epoch, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "commit_pos = IF(epoch <= VALUES(epoch), VALUES(commit_pos), commit_pos), "
    "index_pos = IF(epoch <= VALUES(epoch), VALUES(index_pos), index_pos), "
    "updated_at = IF(epoch <= VALUES(epoch), VALUES(updated_at), updated_at), "
    "epoch = IF(epoch <= VALUES(epoch), VALUES(epoch), epoch); "  # last: the others see the old
    "SELECT epoch FROM checkpoints WHERE name = %s AND `partition` = %s"
)
_SNAPSHOT: Final = (
    "INSERT INTO snapshots (tenant, domain, aggregate_id, `sequence`, `type`, schema_version, "
    "state, taken_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "`type` = IF(VALUES(`sequence`) >= `sequence`, VALUES(`type`), `type`), "
    "schema_version = IF(VALUES(`sequence`) >= `sequence`, VALUES(schema_version), "
    "schema_version), "
    "state = IF(VALUES(`sequence`) >= `sequence`, VALUES(state), state), "
    "taken_at = IF(VALUES(`sequence`) >= `sequence`, VALUES(taken_at), taken_at), "
    "`sequence` = GREATEST(`sequence`, VALUES(`sequence`))"
)


async def side_writes(
    conn: asyncmy.Connection,
    unit: WriteUnit,
    rows: list[TableWrite],
    now: int,
    hook: FaultHook | None,
) -> None:
    """The unit's read-model rows, leases, checkpoints (fenced) and snapshots, in its
    transaction; ReadModelError, LeaseHeld or CheckpointFenced fail the unit."""
    if rows or unit.leases:
        if hook is not None:
            hook("tables", unit)
        await write_tables(conn, rows)
        await write_leases(conn, unit.leases)
    if hook is not None and unit.checkpoints:
        hook("checkpoint", unit)
    for cp in unit.checkpoints:
        p = cp.position
        res = await run(
            conn,
            _CHECKPOINT,
            (cp.name, cp.partition, p.commit, p.index, cp.epoch, now, cp.name, cp.partition),
        )
        stored = int((res[1].rows or [(cp.epoch,)])[0][0])
        if stored > cp.epoch:
            raise CheckpointFenced(cp.name, cp.partition, cp.epoch, stored)
    if hook is not None and unit.snapshots:
        hook("snapshot", unit)
    for snap in unit.snapshots:
        st = snap.stream
        await run(
            conn,
            _SNAPSHOT,
            (
                st.tenant,
                st.domain,
                st.aggregate_id,
                snap.sequence,
                snap.type,
                snap.schema_version,
                snap.state,
                snap.taken_at_us,
            ),
        )
