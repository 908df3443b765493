import asyncio

import msgspec

import chronik
from chronik.aggregate import AggregateModel
from chronik.lifecycle import move_store


# --8<-- [start:app]
class Deposited(msgspec.Struct):
    cents: int


class BooksClosed(msgspec.Struct):
    balance: int


class Deposit(msgspec.Struct):
    cents: int


class Ledger(chronik.Aggregate):
    domain = "ledger"
    balance: int = 0

    @chronik.command()
    def deposit(self, cmd: Deposit) -> None:
        self.emit(Deposited(cmd.cents))

    @chronik.apply
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.cents

    @chronik.apply
    def _closed(self, event: BooksClosed) -> None:
        self.balance = event.balance

    def closing_event(self) -> BooksClosed:
        return BooksClosed(self.balance)


def build_app(store: str) -> chronik.Chronik:
    """The factory a chronik.yaml names (``app: ledger_compaction:build_app``)."""
    registry = chronik.EventRegistry()
    registry.register(Deposited, "ledger.deposited")
    registry.register(BooksClosed, "ledger.books_closed")
    app = chronik.Chronik(store=store, registry=registry)
    app.add_model(AggregateModel(Ledger))
    return app


# --8<-- [end:app]


async def main() -> None:
    # --8<-- [start:move]
    async with (
        chronik.open_store("memory://") as source,
        chronik.open_store("sqlite:///moved.db") as target,
    ):
        cart = chronik.StreamId("cart", "c1")
        await source.append(cart, [chronik.EventData("item.added", {"sku": "A"})])
        await source.delete_stream(cart)  # soft: reads empty in the source ...
        log = chronik.StreamId("log", "l1")
        await source.append(log, [chronik.EventData("tick", {"i": i}) for i in range(3)])
        await source.set_retention(log, chronik.Retention(max_count=100, truncate_before=1))
        report = await move_store(source, target)
        print("verified:", report.verified, "rules set:", report.imported.retention)
        print("cart reads", await target.stream_version(cart))  # ... and in the target: None
        kept = [e.sequence async for e in target.read_stream(log)]
        print("log keeps sequences", kept)  # [1, 2]: truncated before 1, as in the source
    # --8<-- [end:move]


if __name__ == "__main__":
    asyncio.run(main())
