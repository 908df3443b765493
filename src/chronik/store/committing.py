"""The full path of ``EventStore._commit``, for the units and stores that need more than ``_write``.

A unit with DCB conditions is checked against the attached archive first (archived events count
for conditions too: ``ArchiveOps._check_archived``) and, when a condition is scoped to a tenant,
written by ``_write_scoped`` (``chronik.store.tenant_conditions``). A store with write observers
times the commit and tells each of them. Everything else (a plain append, a snapshot, a
checkpoint) goes straight to the adapter's ``_write``: ``EventStore._commit`` decides with one
check and keeps this module off the hot path.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from chronik.messages import AppendResult
from chronik.store.records import WriteUnit

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["commit_checked"]

_log = logging.getLogger("chronik.store")


async def commit_checked(store: EventStore, unit: WriteUnit) -> list[AppendResult]:
    """``store._write(unit)`` after the archive check of its conditions, tenant-scoped, timed
    for the store's write observers."""
    if unit.conditions:
        await store._check_archived(unit)  # archived events count for DCB conditions too
    if not store.write_observers:
        return await store._write_scoped(unit)
    start = time.perf_counter()
    results = await store._write_scoped(unit)
    elapsed = time.perf_counter() - start
    for observe in store.write_observers:
        try:
            observe(unit.appends, elapsed)
        except Exception:  # the unit is committed: an observer cannot undo or fail it
            _log.exception("write observer %r failed", observe)
    return results
