import asyncio

import chronik
from chronik import AppendCondition, EventData, Query, QueryItem


async def main() -> None:
    async with chronik.open_store("sqlite:///data/events.db") as store:
        # any event may carry tags; append_tagged needs no stream
        await store.append_tagged(
            [
                EventData("course.defined", {"id": "c1", "seats": 1}, tags=["course:c1"]),
                EventData("student.registered", {"id": "s7"}, tags=["student:s7"]),
            ]
        )

        # decide from what a query finds ...
        needs = Query(
            [
                QueryItem(types=["course.defined", "student.subscribed"], tags=["course:c1"]),
                QueryItem(types=["student.subscribed"], tags=["student:s7"]),
            ]
        )
        seen = [e async for e in store.read_query(needs)]
        seats = next(e.json()["seats"] for e in seen if e.type == "course.defined")
        taken = sum(e.type == "student.subscribed" for e in seen if "course:c1" in e.tags)
        assert taken < seats

        # ... and append only if nothing it found has changed since
        condition = AppendCondition(fail_if_events_match=needs, after=seen[-1].position)
        subscribed = EventData("student.subscribed", {}, tags=["course:c1", "student:s7"])
        await store.append_tagged([subscribed], condition)
        try:  # a second decision made from the same read loses, and nothing is written
            late = EventData("student.subscribed", {}, tags=["course:c1", "student:s8"])
            await store.append_tagged([late], condition)
        except chronik.AppendConditionFailed as err:
            print("rejected:", err)
        else:
            raise SystemExit("a decision made from a stale read was accepted")

        # uniqueness: no position means "fail if any such event exists"
        claim = AppendCondition(Query.of(["username.claimed"], ["username:ada"]))
        await store.append_tagged([EventData("username.claimed", {}, tags=["username:ada"])], claim)

        async for event in store.read_query(Query.of(tags=["course:c1"])):
            print(event.position, event.type, event.tags)


asyncio.run(main())
