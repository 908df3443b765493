"""Outbox messages carry the tenant of what they come from (the ``chronik-tenant`` header)."""

from __future__ import annotations

import pytest

import chronik
from chronik.outbox import OutboxAdmin, record
from chronik.outbox_tenants import TENANT_HEADER, tenant_of
from chronik.transports.message import Message


async def test_messages_are_stamped_and_listed_per_tenant() -> None:
    """A tenant's message gets the header, the default tenant's none; listing filters."""
    async with chronik.open_store("memory://") as store:
        async with store.transaction() as tx:
            record(tx, Message(topic="t", body=b"1", id="a"), tenant="acme")
            record(tx, Message(topic="t", body=b"2", id="d"))
            record(tx, Message(topic="t", body=b"3", id="b", headers={"x": "1"}), tenant="beta")
        admin = OutboxAdmin(store)
        every = await admin.messages()
        assert {m["id"]: tenant_of(m) for m in every} == {"a": "acme", "d": "", "b": "beta"}
        assert [m["id"] for m in await admin.messages(tenant="acme")] == ["a"]
        assert [m["id"] for m in await admin.messages(tenant="")] == ["d"]
        assert [m["id"] for m in await admin.messages(tenant="beta", limit=5)] == ["b"]
        assert await admin.messages(tenant="nobody") == []


async def test_a_message_naming_another_tenant_is_refused() -> None:
    """A header that names a tenant other than the one recorded for fails, nothing stored."""
    async with chronik.open_store("memory://") as store:
        with pytest.raises(chronik.ValidationError):
            async with store.transaction() as tx:
                msg = Message(topic="t", body=b"1", id="a", headers={TENANT_HEADER: "beta"})
                record(tx, msg, tenant="acme")
        assert await OutboxAdmin(store).messages() == []
