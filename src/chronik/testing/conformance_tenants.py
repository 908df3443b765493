"""Conformance cases for reads of one tenant (``tenant=`` on ``read_all``, ``read_page``,
``read_query``, ``read_query_payloads``, ``list_streams`` and ``subscribe``): a mixin for the
adapters' conformance test classes beside ``EventStoreConformance`` (whose ``store`` fixture
it uses). None reads every tenant, "" the default tenant; another tenant's events never show."""

from __future__ import annotations

import asyncio

import pytest

from chronik import AppendCondition, Position, Query, QueryItem, StreamId
from chronik.errors import AppendConditionFailed, ValidationError
from chronik.messages import EventData, RecordedEvent
from chronik.store.base import EventStore
from chronik.testing.conformance_state import collect, ev

__all__ = ["TenantConformance"]


async def _seed(store: EventStore) -> None:
    """Three tenants interleaved in the log: "" (default), "acme" and "beta"; one tagged
    event in each."""
    for n in range(3):
        for tenant in ("", "acme", "beta"):
            await store.append(StreamId("ten", f"s{n}", tenant), [ev(n, "ten.made")])
    await store.append(StreamId("other", "o1", "beta"), [ev(9, "other.made")])
    for tenant in ("", "acme", "beta"):
        await store.append_tagged(
            [EventData("ten.tagged", {"t": tenant}, tags=("shared:1",))],
            tenant=tenant,
            domain="tend",
        )


def _tenants(events: list[RecordedEvent]) -> set[str]:
    return {e.stream.tenant for e in events}


class TenantConformance:
    """Every log-wide read takes a tenant filter and honours it exactly."""

    async def test_read_all_keeps_one_tenant(self, store: EventStore) -> None:
        """read_all(tenant=) yields that tenant's events only, in order, both directions."""
        await _seed(store)
        every = await collect(store.read_all())
        for tenant in ("", "acme", "beta"):
            got = await collect(store.read_all(tenant=tenant))
            assert got == [e for e in every if e.stream.tenant == tenant]
            back = await collect(store.read_all(tenant=tenant, backward=True))
            assert back == got[::-1]
        assert len(await collect(store.read_all(tenant="nobody"))) == 0
        assert await collect(store.read_all(tenant=None)) == every

    async def test_read_all_filters_combine_and_page(self, store: EventStore) -> None:
        """The tenant filter combines with domains, types, after and limit."""
        await _seed(store)
        beta = await collect(store.read_all(tenant="beta", domains=["ten"]))
        assert [e.stream.aggregate_id for e in beta] == ["s0", "s1", "s2"]
        assert _tenants(beta) == {"beta"}
        typed = await collect(store.read_all(tenant="beta", types=["other.made"]))
        assert [e.stream.domain for e in typed] == ["other"]
        first = await collect(store.read_all(tenant="acme", limit=2))
        rest = await collect(store.read_all(after=first[-1].position, tenant="acme"))
        assert len(first) == 2 and _tenants(first + rest) == {"acme"}
        assert first + rest == await collect(store.read_all(tenant="acme"))

    async def test_read_page_and_subscribe_keep_one_tenant(self, store: EventStore) -> None:
        """read_page(tenant=) and subscribe(tenant=) deliver that tenant's events, live too."""
        await _seed(store)
        page = await store.read_page(None, 100, tenant="acme")
        assert page.events and _tenants(page.events) == {"acme"}
        got: list[RecordedEvent] = []
        async with store.subscribe(tenant="acme", batch_size=2) as sub:
            async for event in sub:
                got.append(event)
                if len(got) == len(page.events):
                    break
            await store.append(StreamId("ten", "late", "beta"), [ev(1)])
            await store.append(StreamId("ten", "late", "acme"), [ev(2)])
            live = await asyncio.wait_for(sub.__anext__(), 10)
        assert got == page.events
        assert live.stream == StreamId("ten", "late", "acme")

    async def test_read_query_keeps_one_tenant(self, store: EventStore) -> None:
        """read_query and read_query_payloads with a tenant see only its tagged events."""
        await _seed(store)
        query = Query([QueryItem(tags=["shared:1"])])
        assert len(await collect(store.read_query(query))) == 3
        for tenant in ("", "acme", "beta"):
            got = await collect(store.read_query(query, tenant=tenant))
            assert [e.json()["t"] for e in got] == [tenant]
            rows = await store.read_query_payloads(query, tenant=tenant)
            assert len(rows) == 1 and rows[0][0] == "ten.tagged"
            back = await collect(store.read_query(query, backward=True, tenant=tenant))
            assert back == got
        typed = Query([QueryItem(types=["ten.made"])])
        assert _tenants(await collect(store.read_query(typed, tenant="acme"))) == {"acme"}

    async def test_query_payload_rows_of_one_tenant(self, store: EventStore) -> None:
        """read_query_payloads(tenant=) gives the rows of read_query(tenant=)'s events for
        every query shape, paged by after and limit past other tenants' matches."""
        for n in range(4):  # acme's events between runs of beta's, every one tagged
            for tenant in ("beta", "beta", "acme", ""):
                data = EventData("pay.made", {"n": n}, tags=("pay:1", f"n:{n % 2}"))
                await store.append_tagged([data], tenant=tenant, domain="pay")
        await store.append_tagged([EventData("pay.other", {}, tags=("pay:1",))], tenant="acme")
        shapes = [
            Query([QueryItem(tags=["pay:1"])]),
            Query([QueryItem(["pay.made"], ["pay:1", "n:1"])]),
            Query([QueryItem(types=["pay.other"]), QueryItem(tags=["n:0"])]),
            Query([QueryItem(types=["pay.made"])]),
            Query([QueryItem()]),
        ]
        for query in shapes:
            for tenant in ("acme", "", "gamma"):
                got = await collect(store.read_query(query, tenant=tenant))
                assert _tenants(got) <= {tenant}
                want = [(e.type, 1, e.payload, e.position) for e in got]
                rows = await store.read_query_payloads(query, tenant=tenant)
                assert [(r[0], r[1], r[2], Position(r[3], r[4])) for r in rows] == want
                after, paged = None, []
                while page := await store.read_query_payloads(query, after, 2, tenant):
                    paged += page
                    after = Position(page[-1][3], page[-1][4])
                assert [tuple(r) for r in paged] == [tuple(r) for r in rows], (query, tenant)
        assert len(await store.read_query_payloads(shapes[0], tenant="acme")) == 5

    async def test_list_streams_keeps_one_tenant(self, store: EventStore) -> None:
        """list_streams(tenant=) lists that tenant's streams only, and honours its limit."""
        await _seed(store)
        acme = [i.stream async for i in store.list_streams("ten", tenant="acme")]
        assert acme == [StreamId("ten", f"s{n}", "acme") for n in range(3)]
        default = [i.stream async for i in store.list_streams("ten", tenant="")]
        assert {s.tenant for s in default} == {""} and len(default) == 3
        two = [i async for i in store.list_streams(tenant="beta", limit=2)]
        assert len(two) == 2 and {i.stream.tenant for i in two} == {"beta"}

    async def test_list_streams_pages_past_other_tenants(self, store: EventStore) -> None:
        """A tenant's streams behind pages of another's are found, a limit at a time."""
        for n in range(5):
            await store.append(StreamId("lst", f"b{n}", "beta"), [ev(n)])
        for n in range(3):
            await store.append(StreamId("lst", f"a{n}", "acme"), [ev(n)])
        two = [
            i.stream.aggregate_id async for i in store.list_streams("lst", tenant="acme", limit=2)
        ]
        assert two == ["a0", "a1"]
        every = [i.stream.aggregate_id async for i in store.list_streams("lst", tenant="acme")]
        assert every == ["a0", "a1", "a2"]
        assert [i async for i in store.list_streams("lst", tenant="gamma")] == []

    async def test_append_conditions_count_their_tenant_only(self, store: EventStore) -> None:
        """A tagged append's condition in tenant A is not failed by B's (or the default
        tenant's) matching events, alone or in a unit of work; A's own event fails it."""
        query = Query([QueryItem(tags=["seat:1"])])
        for tenant in ("beta", ""):
            await store.append_tagged([EventData("held", {}, tags=["seat:1"])], tenant=tenant)
        cond = AppendCondition(query, None)
        mine = await store.append_tagged(
            [EventData("held", {}, tags=["seat:1"])], cond, tenant="acme"
        )
        async with store.transaction() as tx:
            tx.append_tagged([EventData("other", {}, tags=["x:1"])], cond, tenant="gamma")
            tx.append(StreamId("ten", "u1", "gamma"), [ev(1)])
        with pytest.raises(AppendConditionFailed) as err:
            await store.append_tagged([EventData("held", {}, tags=["seat:2"])], cond, tenant="acme")
        assert err.value.position == mine.positions[0]
        with pytest.raises(AppendConditionFailed):
            async with store.transaction() as tx:
                tx.append_tagged([EventData("held", {}, tags=["seat:3"])], cond, tenant="beta")
                tx.append(StreamId("ten", "u2", "beta"), [ev(2)])
        later = AppendCondition(query, mine.positions[0])
        await store.append_tagged([EventData("held", {}, tags=["seat:4"])], later, tenant="acme")
        seats = await collect(store.read_query(Query([QueryItem(types=["held"])]), tenant="acme"))
        assert len(seats) == 2

    async def test_a_bad_tenant_filter_is_refused(self, store: EventStore) -> None:
        """A tenant that breaks the naming rule is a ValidationError naming the field."""
        with pytest.raises(ValidationError) as err:
            await collect(store.read_all(tenant="Not Valid"))
        assert err.value.field == "tenant"
        with pytest.raises(ValidationError):
            store.subscribe(tenant="Not Valid")
        with pytest.raises(ValidationError):
            await store.read_page(None, 10, tenant=3)  # type: ignore[arg-type]
