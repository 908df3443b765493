import asyncio

import chronik


def decide(command: chronik.Command, state: dict) -> chronik.EventData:
    return chronik.EventData("note.added", {"text": command.payload["text"]})


def evolve(state: dict, event: chronik.RecordedEvent) -> dict:
    return {"notes": [*state.get("notes", []), event.json()["text"]]}


async def main() -> None:
    app = chronik.Chronik(store="memory://")
    app.add_decider("note", decide, evolve, dict)
    async with app:
        await app.dispatch(chronik.Command(
            domain="note", aggregate_id="n-1", type="Add", payload={"text": "hi"}, tenant="acme",
        ))
        print("acme:", await app.load("note", "n-1", tenant="acme"))
        print("no tenant:", await app.load("note", "n-1"))  # another tenant: nothing
        acme = chronik.StreamId("note", "n-1", tenant="acme")
        print([e.type async for e in app.store.read_stream(acme)])


asyncio.run(main())
