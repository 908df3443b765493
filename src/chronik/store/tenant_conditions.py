"""DCB append conditions of one tenant on adapters that check conditions over every tenant.

A condition made by ``append_tagged(..., tenant=T)`` counts only T's events
(``ConditionCheck.tenant``). Memory, SQLite and PostgreSQL check that in their own transaction
(``native_tenant_conditions``); on the others ``write_scoped`` runs the unit, and when it fails
on an event of another tenant, runs it again with that condition's ``after`` moved past the
event: each attempt is the adapter's own atomic check and write, and nothing of the tenant lies
between the old ``after`` and the first match, so the answer is the tenant-scoped one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronik.errors import AppendConditionFailed

if TYPE_CHECKING:
    from chronik.messages import AppendResult
    from chronik.store.base import EventStore
    from chronik.store.records import WriteUnit

__all__ = ["scoped", "write_scoped"]


def scoped(unit: WriteUnit) -> bool:
    """Whether a condition of ``unit`` counts one tenant's events only."""
    return any(c.tenant is not None for c in unit.conditions)


async def write_scoped(store: EventStore, unit: WriteUnit) -> list[AppendResult]:
    """``store._write(unit)``, its tenant-scoped conditions blind to other tenants' events."""
    while True:
        try:
            return await store._write(unit)
        except AppendConditionFailed:
            conditions = list(unit.conditions)
            moved = False
            for i, cond in enumerate(conditions):
                if cond.tenant is None:
                    continue
                first = [e async for e in store.read_query(cond.query, cond.after, limit=1)]
                if first and first[0].stream.tenant != cond.tenant:
                    conditions[i] = cond._replace(after=first[0].position)
                    moved = True
            if not moved:
                raise
            unit = unit._replace(conditions=conditions)
