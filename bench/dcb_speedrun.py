"""The chronik side of the DCB speedrun (bench/dcb.py): the same operations three ways.

- ``StreamAggregates``: a student stream and a course stream; a subscription reads both
  streams and writes one event to each in ONE unit of work (``store.transaction()``, each
  append at the version read), which is how chronik updates two aggregates under one rule and
  what eventsourcing's ``save(student, course)`` does.
- ``DcbDispatch``: the examples/courses ``DcbDecider`` dispatched as commands through
  ``chronik.Chronik(...).dispatch``.
- ``DcbStore``: the same decisions on the store API (``read_query`` + ``append_tagged`` with an
  ``AppendCondition``), without the framework around them.

The examples' decider is built with ``courses_decider(max_courses=10)``: the speedrun
subscribes each student to 10 courses of 10 places each, so no operation is refused.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import chronik
import examples.courses.logic as courses_logic
from chronik import NO_STREAM, AppendCondition, EventData, Query, QueryItem, StreamId
from examples.courses.events import registry

MAX_COURSES = 10  # the speedrun subscribes each student to 10 courses


class Enrolment(Protocol):
    async def register_student(self, sid: str) -> None: ...
    async def register_course(self, cid: str) -> None: ...
    async def join(self, sid: str, cid: str) -> None: ...


async def speedrun(app: Enrolment, seconds: float) -> float:
    """Iterations of 10 students + 10 courses + 100 subscriptions for ``seconds`` (at least
    one): operations/s."""
    ops, it = 0, 0
    start = time.perf_counter()
    while it == 0 or time.perf_counter() < start + seconds:
        students = [f"s{it}-{k}" for k in range(10)]
        courses = [f"c{it}-{k}" for k in range(10)]
        for s in students:
            await app.register_student(s)
        for c in courses:
            await app.register_course(c)
        for s in students:
            for c in courses:
                await app.join(s, c)
        ops += 120
        it += 1
    return ops / (time.perf_counter() - start)


class Refused(Exception):
    """A subscription the rules refuse (the speedrun stays within them)."""


class StreamAggregates:
    """A student stream and a course stream; a subscription writes both in one unit of work."""

    def __init__(self, store: chronik.EventStore) -> None:
        self.store = store

    async def register_student(self, sid: str) -> None:
        e = EventData("student.registered", {"name": sid, "max_courses": 10})
        await self.store.append(StreamId("student", sid), [e], NO_STREAM)

    async def register_course(self, cid: str) -> None:
        e = EventData("course.registered", {"name": cid, "places": 10})
        await self.store.append(StreamId("course", cid), [e], NO_STREAM)

    async def _load(self, stream: StreamId) -> tuple[int, int, list[str]]:
        version, limit, members = -1, 0, []
        async for e in self.store.read_stream(stream):
            data = e.json()
            version = e.sequence
            if e.sequence == 0:
                limit = data.get("max_courses") or data["places"]
            else:
                members.append(data["id"])
        if version < 0:
            raise Refused(f"no such {stream.domain}")
        return version, limit, members

    async def join(self, sid: str, cid: str) -> None:
        student, course = StreamId("student", sid), StreamId("course", cid)
        s_version, s_limit, s_courses = await self._load(student)
        c_version, c_places, c_students = await self._load(course)
        if len(s_courses) >= s_limit or sid in c_students or len(c_students) >= c_places:
            raise Refused(f"{sid} cannot join {cid}")
        async with self.store.transaction() as tx:
            tx.append(student, [EventData("student.joined_course", {"id": cid})], s_version)
            tx.append(course, [EventData("course.accepted_student", {"id": sid})], c_version)


class DcbDispatch:
    """The examples/courses DcbDecider through ``Chronik.dispatch``."""

    def __init__(self, app: chronik.Chronik) -> None:
        self.app = app

    async def _do(self, key: str, ctype: str, **payload: Any) -> None:
        await self.app.dispatch(
            chronik.Command(domain="courses", aggregate_id=key, type=ctype, payload=payload)
        )

    async def register_student(self, sid: str) -> None:
        await self._do(sid, "RegisterStudent", student_id=sid, name=sid)

    async def register_course(self, cid: str) -> None:
        await self._do(cid, "DefineCourse", course_id=cid, capacity=10)

    async def join(self, sid: str, cid: str) -> None:
        await self._do(sid, "SubscribeStudent", course_id=cid, student_id=sid)


class DcbStore:
    """The same decisions on the store API: read_query, decide, append_tagged + condition,
    and read-decide-append again on AppendConditionFailed (as the command bus does: on
    PostgreSQL a read may stop short of an event committed just before it while another
    transaction is open, and the condition then refuses a decision made without it)."""

    def __init__(self, store: chronik.EventStore) -> None:
        self.store = store
        self.retries = 0

    async def _decide(
        self, query: Query, decide: Callable[[list[chronik.RecordedEvent]], EventData]
    ) -> None:
        for attempt in range(10):
            events = [e async for e in self.store.read_query(query)]
            after = events[-1].position if events else None
            try:
                await self.store.append_tagged(
                    [decide(events)], AppendCondition(query, after), domain="courses"
                )
                return
            except chronik.AppendConditionFailed:
                if attempt == 9:
                    raise
                self.retries += 1

    async def _create(self, etype: str, tag: str, payload: dict[str, Any]) -> None:
        def decide(events: list[chronik.RecordedEvent]) -> EventData:
            if events:
                raise Refused(f"{tag} exists")
            return EventData(etype, payload, tags=[tag])

        await self._decide(Query.of([etype], [tag]), decide)

    async def register_student(self, sid: str) -> None:
        await self._create("student.registered", f"student:{sid}", {"student_id": sid, "name": sid})

    async def register_course(self, cid: str) -> None:
        await self._create("course.defined", f"course:{cid}", {"course_id": cid, "capacity": 10})

    async def join(self, sid: str, cid: str) -> None:
        course_tag, student_tag = f"course:{cid}", f"student:{sid}"
        query = Query(
            [
                QueryItem(["course.defined", "student.subscribed"], [course_tag]),
                QueryItem(["student.registered", "student.subscribed"], [student_tag]),
            ]
        )

        def decide(events: list[chronik.RecordedEvent]) -> EventData:
            capacity, known = 0, False
            seats: set[str] = set()
            courses: set[str] = set()
            for e in events:
                data = e.json()
                if e.type == "course.defined":
                    capacity = data["capacity"]
                elif e.type == "student.registered":
                    known = True
                else:
                    if data["course_id"] == cid:
                        seats.add(data["student_id"])
                    if data["student_id"] == sid:
                        courses.add(data["course_id"])
            if not capacity or not known or cid in courses or len(seats) >= capacity:
                raise Refused(f"{sid} cannot join {cid}")
            if len(courses) >= MAX_COURSES:
                raise Refused(f"{sid} takes too many courses")
            payload = {"course_id": cid, "student_id": sid}
            return EventData("student.subscribed", payload, tags=[course_tag, student_tag])

        await self._decide(query, decide)


async def chronik_speedrun(url: str, kind: str, seconds: float) -> float:
    """One chronik speedrun run of ``kind`` (aggregates, dispatch, store) on ``url``."""
    if kind == "dispatch":
        app = chronik.Chronik(store=url, registry=registry, run_projections=False)
        app.add_model(courses_logic.courses_decider(MAX_COURSES))
        async with app:
            return await speedrun(DcbDispatch(app), seconds)
    async with chronik.open_store(url) as store:
        if kind == "aggregates":
            return await speedrun(StreamAggregates(store), seconds)
        side = DcbStore(store)
        rate = await speedrun(side, seconds)
        if side.retries:
            print(f"  store side: {side.retries} retries on AppendConditionFailed", file=sys.stderr)
        return rate
