"""The tenant of outbox messages: the ``chronik-tenant`` header (``chronik.outbox``).

A message recorded for a tenant's command or event carries the tenant in this header (none for
the default tenant ""), to the transport's consumers and to ``OutboxAdmin.messages(tenant=)``.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from chronik.errors import ValidationError
from chronik.store.base import EventStore
from chronik.store.tables import OUTBOX
from chronik.store.tenant_reads import check_tenant_filter
from chronik.transports.message import Message

__all__ = ["TENANT_HEADER", "outbox_rows", "stamped", "tenant_of"]

#: The header that names a message's tenant (absent: the default tenant "").
TENANT_HEADER: Final = "chronik-tenant"


def stamped(message: Message, tenant: str) -> Message:
    """``message`` with ``tenant`` in its header; ValidationError if it names another."""
    if not tenant and TENANT_HEADER not in message.headers:
        return message
    check_tenant_filter(tenant)
    if message.headers.get(TENANT_HEADER, tenant) != tenant:
        raise ValidationError(
            f"message {message.id} names tenant {message.headers[TENANT_HEADER]!r}, "
            f"recorded for {tenant!r}",
            field="tenant",
        )
    return msgspec.structs.replace(message, headers={**message.headers, TENANT_HEADER: tenant})


def tenant_of(row: dict[str, Any]) -> str:
    """The tenant of an outbox row ("" when its message names none)."""
    return str(json.loads(row["headers"] or "{}").get(TENANT_HEADER, ""))


async def outbox_rows(
    store: EventStore, where: dict[str, Any] | None, limit: int, tenant: str | None
) -> list[dict[str, Any]]:
    """Outbox rows meeting ``where``, oldest first, of ``tenant`` (every tenant's when None:
    the tenant is in the headers, so the rows of one are filtered here), at most ``limit``."""
    check_tenant_filter(tenant)
    order = ("created_us", "id")
    if tenant is None:
        return await store.read_table(OUTBOX.name, where, order, limit)
    rows = await store.read_table(OUTBOX.name, where, order)
    return [r for r in rows if tenant_of(r) == tenant][:limit]
