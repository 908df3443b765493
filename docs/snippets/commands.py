import asyncio

import msgspec

import chronik

registry = chronik.EventRegistry()


@registry.event()
class CustomerCreated(msgspec.Struct):
    name: str
    email: str


class CreateCustomer(msgspec.Struct):  # the command's payload schema
    name: str
    email: str


def decide(command: chronik.Command, state: dict) -> object:
    if state.get("name"):
        raise chronik.CommandRejected("Customer already exists")
    return CustomerCreated(command.payload.name, command.payload.email)


def evolve(state: dict, event: object) -> dict:
    return {**state, "name": event.name}


async def main() -> None:
    app = chronik.Chronik(store="sqlite:///data/events.db", registry=registry)
    app.add_decider(
        "customer", decide=decide, evolve=evolve, initial=dict,
        commands={"CreateCustomer": CreateCustomer},
        snapshots=chronik.Snapshots(every=100),
    )
    async with app:
        command = chronik.Command(
            domain="customer", aggregate_id="cust-001", type="CreateCustomer",
            payload={"name": "Ada", "email": "ada@example.com"},
            command_id="c-1", metadata={"correlation_id": "req-9"},
        )
        result = await app.dispatch(command)
        print(result.events[0].type, dict(result.events[0].metadata))
        again = await app.dispatch(command)  # same command id: nothing appended
        print("duplicate:", again.duplicate, again.events == result.events)
        try:
            await app.dispatch(chronik.Command(
                domain="customer", aggregate_id="cust-001", type="CreateCustomer",
                payload={"name": "Ada", "email": "ada@example.com"},
            ))
        except chronik.CommandRejected as err:
            print("rejected:", err.reason)


asyncio.run(main())
