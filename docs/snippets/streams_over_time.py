import asyncio

import msgspec

import chronik
from chronik.aggregate import AggregateModel
from chronik.lifecycle.compaction import compact_aggregate
from chronik.lifecycle.scavenger import scavenge
from chronik.projections import Projection, ReadModel, Table

# --8<-- [start:handler]
orders = Projection(
    "order_lines",
    tables=[Table("lines", {"order_id": str, "sku": str}, primary_key=("order_id", "sku"))],
)


@orders.on("item.added")
def item_added(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    rm.upsert("lines", order_id=event.stream.aggregate_id, sku=event.json()["sku"])


@orders.on(chronik.STREAM_DELETED)  # reaches the partition after the stream's own events
async def order_deleted(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    info = chronik.deletion_of(event)  # stream, hard, before (its sequence), position
    assert info is not None
    await rm.delete_where("lines", order_id=event.stream.aggregate_id)


# --8<-- [end:handler]


# --8<-- [start:model]
class Deposited(msgspec.Struct):
    cents: int


class BooksClosed(msgspec.Struct):
    balance: int


class Ledger(chronik.Aggregate):
    domain = "ledger"
    balance: int = 0

    @chronik.apply
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.cents

    @chronik.apply
    def _closed(self, event: BooksClosed) -> None:  # the summary sets the whole state
        self.balance = event.balance

    def closing_event(self) -> BooksClosed:  # what compact_aggregate asks the model for
        return BooksClosed(self.balance)


# --8<-- [end:model]


async def main() -> None:
    async with chronik.open_store("sqlite:///streams.db") as store:
        cart = chronik.StreamId("cart", chronik.new_event_id())
        await store.append(cart, [chronik.EventData("item.added", {"sku": "A"})])

        # --8<-- [start:soft]
        # A soft delete: the stream reads empty, its events stay in the log until scavenged,
        # and a new append starts it again (sequence numbers continue after the deletion).
        deleted = await store.delete_stream(cart, expected=0)
        print("deletion event at sequence", deleted.first_sequence)
        print("version after a soft delete:", await store.stream_version(cart))
        again = await store.append(cart, [chronik.EventData("item.added", {"sku": "B"})])
        print("restarted at sequence", again.first_sequence)
        # --8<-- [end:soft]

        # --8<-- [start:hard]
        # A hard delete leaves a tombstone: the id can never be used again.
        order = chronik.StreamId("order", chronik.new_event_id())
        await store.append(order, [chronik.EventData("order.placed", {})])
        await store.delete_stream(order, hard=True)
        try:
            await store.append(order, [chronik.EventData("order.placed", {})])
        except chronik.StreamDeleted as err:
            print("refused:", err)
        # --8<-- [end:hard]

        # --8<-- [start:retention]
        # Retention: keep the last 2 events of a stream; the scavenger removes the rest.
        metrics = chronik.StreamId("metrics", "cpu")
        await store.append(metrics, [chronik.EventData("sampled", {"v": v}) for v in range(5)])
        await store.set_retention(metrics, chronik.Retention(max_count=2))
        preview = await scavenge(store, dry_run=True)
        print("a dry run would remove", preview.events, "events,", preview.bytes, "bytes")
        report = await scavenge(store, {"audit": chronik.Retention(max_age=90 * 86400)})
        print("removed", report.events, "events from", report.streams, "streams")
        print("metrics now:", [e.sequence async for e in store.read_stream(metrics)])
        # --8<-- [end:retention]

        # --8<-- [start:projection]
        # A projection learns of deletions by the deletion event, after the stream's events.
        deletions = [
            chronik.deletion_of(e) async for e in store.read_all(types=[chronik.STREAM_DELETED])
        ]
        print("deletions:", [(str(d.stream), d.hard) for d in deletions if d is not None])
        # --8<-- [end:projection]

        # --8<-- [start:compaction]
        registry = chronik.EventRegistry()
        registry.register(Deposited, "ledger.deposited")
        registry.register(BooksClosed, "ledger.books_closed")
        ledger = chronik.StreamId("ledger", "l1")
        await store.append(ledger, [registry.to_event_data(Deposited(c)) for c in (10, 20, 30)])
        # events 0..1 become one BooksClosed at sequence 1 (same position); 2 stays as it is
        closed = await compact_aggregate(store, registry, AggregateModel(Ledger), "l1", 1)
        print("closed the books:", closed.sequence, registry.decode(closed))
        print("ledger now:", [(e.sequence, e.type) async for e in store.read_stream(ledger)])
        # --8<-- [end:compaction]


asyncio.run(main())
