import asyncio

import chronik


async def main() -> None:
    async with chronik.open_store("sqlite:///data/events.db") as store:
        ada = chronik.StreamId("customer", chronik.new_event_id())
        first = await store.append(
            ada,
            [
                chronik.EventData(
                    "customer.registered", {"name": "Ada"}, {"correlation_id": "req-1"}
                )
            ],
            expected=chronik.NO_STREAM,  # ANY | NO_STREAM | STREAM_EXISTS | last sequence
        )
        await store.append(
            ada,
            [chronik.EventData("customer.renamed", {"name": "Ada L."})],
            expected=first.last_sequence,
        )
        try:  # a writer holding a stale version loses, and nothing is written
            await store.append(
                ada, [chronik.EventData("customer.renamed", {"name": "X"})], expected=0
            )
        except chronik.WrongExpectedVersion as err:
            print("rejected:", err)

        a1, a2 = (chronik.StreamId("account", chronik.new_event_id()) for _ in range(2))
        async with store.transaction() as tx:  # several streams, all or nothing
            tx.append(a1, [chronik.EventData("opened", {})], expected=chronik.NO_STREAM)
            tx.append(a2, [chronik.EventData("opened", {})], expected=chronik.NO_STREAM)

        async for event in store.read_stream(ada):
            print(event.sequence, event.type, event.json())
        print("head:", await store.head(), "units:", len(tx.results))


asyncio.run(main())
