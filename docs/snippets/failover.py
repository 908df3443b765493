import asyncio
from collections.abc import Sequence

import chronik
from chronik.store import open_store
from chronik.testing.faults import inject

# Both servers, in order: every new connection keeps the first one that takes writes, so
# after the standby is promoted the store reaches it without a restart.
URL = "postgresql://app@db1:5432,db2:5432/shop?schema=chronik&target_session_attrs=read-write"


async def append_retrying(
    store: chronik.EventStore,
    stream: chronik.StreamId,
    events: Sequence[chronik.EventData],
    expected: chronik.ExpectedState | int,
    seconds: float = 30.0,
) -> chronik.AppendResult:
    """Append; on StoreUnavailable retry the same EventData (same event ids) until it lands:
    an append that had landed returns its original result, so nothing is stored twice."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + seconds, 0.05
    while True:
        try:
            return await store.append(stream, list(events), expected=expected)
        except chronik.StoreUnavailable as exc:
            if loop.time() + delay > deadline:
                raise
            print("retrying:", "outcome unknown" if exc.outcome_unknown else "nothing was sent")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


async def main() -> None:
    print(URL)
    # Here the in-memory store, and the fault injector plays the primary dying at COMMIT.
    async with open_store("memory://") as store:
        order = chronik.StreamId("orders", "o-1")
        events = [chronik.EventData("order.placed", {"total": 30})]
        lost = chronik.StoreUnavailable("connection lost at COMMIT", outcome_unknown=True)
        with inject(store) as faults:
            faults.fail("commit", lost)
            result = await append_retrying(store, order, events, chronik.NO_STREAM)
        # the same events again (an answer that was lost after all): the original result
        again = await store.append(order, events, expected=chronik.NO_STREAM)
        print("stored once:", again.position == result.position, await store.stream_version(order))


asyncio.run(main())
