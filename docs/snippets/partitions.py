import asyncio

import chronik
from chronik.projections import (
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ReadModel,
    Table,
    query,
)
from chronik.projections.bookkeeping import load_plan

loans = Projection(
    "loans",
    tables=[Table("loans", {"member": str, "open": int}, primary_key="member")],
    partitions=2,  # events split by stream; rows keyed per stream
)


@loans.on("book.lent")
async def lent(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    row = await rm.get("loans", member=event.stream.aggregate_id)
    rm.upsert("loans", member=event.stream.aggregate_id, open=(row["open"] if row else 0) + 1)


async def main() -> None:
    store = chronik.open_store("sqlite:///library.db")
    # two workers (usually two processes) share the partitions; each takes over the other's
    # within the lease ttl if it dies, at once if it stops cleanly
    one = PartitionWorker(store, loans, owner="one", heartbeat=0.05, lease_ttl=1.0)
    two = PartitionWorker(store, loans, owner="two", heartbeat=0.05, lease_ttl=1.0)
    async with store, one, two:
        for i in range(20):
            lend = chronik.EventData("book.lent", {"book": f"b{i}"})
            await store.append(chronik.StreamId("member", f"m{i % 6}"), [lend])
        # a new partition count, no rebuild (as `chronik projections repartition loans -n 4`)
        await ProjectionAdmin(store).repartition("loans", 4)
        for _ in range(200):  # the workers run the new split within a few heartbeats
            if len(one.processors) == 4 and len(one.owned) + len(two.owned) == 4:
                break
            await asyncio.sleep(0.05)
        head = await store.head()
        assert head is not None
        await one.wait_for(head)
        plan = await load_plan(store, "loans")
        assert plan is not None
        print("partitions:", plan.partitions, "one owns", one.owned, "two owns", two.owned)
        print("open loans:", sum(r["open"] for r in await query(store, "loans", "loans")))


asyncio.run(main())
