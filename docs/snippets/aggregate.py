import asyncio

import msgspec

import chronik
from chronik.testing import given

registry = chronik.EventRegistry()


@registry.event()
class ItemAdded(msgspec.Struct):
    sku: str
    price_cents: int


@registry.event()
class OrderPlaced(msgspec.Struct):
    total_cents: int


class AddItem(msgspec.Struct):
    sku: str
    price_cents: int


class PlaceOrder(msgspec.Struct):
    pass


class Order(chronik.Aggregate):
    domain = "order"
    # annotated fields with defaults are the state (a mutable one from a factory)
    items: list[ItemAdded] = msgspec.field(default_factory=list)
    placed: bool = False

    @chronik.command()  # the command type is the payload class's name
    def add_item(self, cmd: AddItem) -> None:
        self.require(not self.placed, "Order already placed")
        self.emit(ItemAdded(cmd.sku, cmd.price_cents))

    @chronik.command()
    def place(self, cmd: PlaceOrder) -> None:
        self.require(self.items, "Order is empty")
        self.emit(OrderPlaced(sum(i.price_cents for i in self.items)))

    @chronik.apply
    def _item_added(self, event: ItemAdded) -> None:
        self.items.append(event)

    @chronik.apply
    def _placed(self, event: OrderPlaced) -> None:
        self.placed = True


# given / when / then: the same code a dispatch runs, in memory, no store
given(Order, ItemAdded("book", 1500)).when("PlaceOrder").then_events(OrderPlaced(1500))
given(Order).when("PlaceOrder").then_rejected("Order is empty")


async def main() -> None:
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_aggregate(Order)
    async with app:
        for sku in ("book", "pen"):
            await app.dispatch(chronik.Command(
                domain="order", aggregate_id="o-1", type="AddItem",
                payload={"sku": sku, "price_cents": 500},
            ))
        result = await app.dispatch(
            chronik.Command(domain="order", aggregate_id="o-1", type="PlaceOrder")
        )
        print(registry.decode(result.events[0]), "at version", result.version)


asyncio.run(main())
