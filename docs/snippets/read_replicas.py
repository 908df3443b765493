import asyncio

import chronik
from chronik.store import GroupStore, ReadWriteStore, open_store
from chronik.store.composite_urls import group_url, rw_url


async def main() -> None:
    # rw://: writes go to the primary, reads to its hot standby (URLs percent-encoded).
    print(rw_url("postgresql://app@primary/db", "postgresql://app@standby/db", max_lag=5))

    # Here the "replica" is a second store on the same SQLite file: same events, same positions.
    writer, reader = open_store("sqlite:///shop.db"), open_store("sqlite:///shop.db")
    async with ReadWriteStore(writer, [reader], max_lag=2.0) as store:
        order = chronik.StreamId("orders", "o-1")
        result = await store.append(order, [chronik.EventData("order.placed", {"total": 30})])
        print("read your writes:", await store.head() == result.position)
        print("fallbacks to the writer:", store.fallbacks)

    # group://: the logs of two bounded contexts read as one, read-only.
    async with open_store("sqlite:///billing.db") as billing:
        await billing.append(
            chronik.StreamId("billing", "i-1"), [chronik.EventData("invoice.sent", {})]
        )
    url = group_url(
        {"orders": "sqlite:///shop.db", "billing": "sqlite:///billing.db"},
        home="sqlite:///views.db",  # projections over the group keep their state here
    )
    async with open_store(url) as group:
        assert isinstance(group, GroupStore)
        print([e.type async for e in group.read_all()])
        try:
            await group.append(chronik.StreamId("orders", "o-2"), [chronik.EventData("x", {})])
        except chronik.StoreReadOnly as exc:
            print("refused:", exc)


asyncio.run(main())
