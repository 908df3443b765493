import asyncio

import msgspec

import chronik
from chronik.aggregate_lock_sweep import sweep_locks

registry = chronik.EventRegistry()


@registry.event()
class ItemAdded(msgspec.Struct):
    sku: str


decided: list[str] = []


def decide(command: chronik.Command, state: dict) -> object:
    decided.append(command.command_id)  # with the lock: once per command, never retried
    return ItemAdded(command.payload["sku"])


def evolve(state: dict, event: ItemAdded) -> dict:
    return {"items": [*state.get("items", []), event.sku]}


def make_app() -> chronik.Chronik:
    # every process that handles "orders" declares the same lock
    app = chronik.Chronik(store="sqlite:///data/events.db", registry=registry)
    lock = chronik.DurableLock(ttl=30, wait=10)
    app.add_decider("orders", decide, evolve, dict, lock=lock)
    return app


async def main() -> None:
    async with make_app() as one, make_app() as two:  # two processes, in one for the demo
        commands = [
            chronik.Command(
                domain="orders", aggregate_id="o-1", type="AddItem",
                payload={"sku": f"sku-{i}"}, command_id=f"add-{i}",
            )
            for i in range(6)
        ]
        await asyncio.gather(*((one, two)[i % 2].dispatch(c) for i, c in enumerate(commands)))
        print("decided", len(decided), "times for", len(commands), "commands")
        print("items:", sorted((await one.load("orders", "o-1"))["items"]))
        # the app sweeps ended lock rows in the background; operators can too:
        print("lock rows swept:", await sweep_locks(one.store, grace=0))


asyncio.run(main())
