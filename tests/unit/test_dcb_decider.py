"""Business logic over DCB: the courses example through the test kit and the command bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik import Command, Query
from chronik.testing import given
from examples.courses.events import (
    CourseDefined,
    StudentRegistered,
    StudentSubscribed,
    UsernameClaimed,
    registry,
)
from examples.courses.logic import MAX_COURSES, courses


def cmd(ctype: str, key: str = "k", command_id: str | None = None, **payload: Any) -> Command:
    """A courses command."""
    return Command(
        domain="courses", aggregate_id=key, type=ctype, payload=payload, command_id=command_id
    )


def test_given_when_then_folds_only_what_the_query_matches() -> None:
    """The test kit folds the prior events the command's query matches: another course's
    fullness does not make this one full."""
    scenario = given(
        courses,
        CourseDefined("c1", 1),
        CourseDefined("c2", 1),
        StudentRegistered("s1", "Ada"),
        StudentRegistered("s2", "Bob"),
        StudentSubscribed("c2", "s2"),
        registry=registry,
    )
    scenario.when(cmd("SubscribeStudent", course_id="c1", student_id="s1")).then_events(
        StudentSubscribed("c1", "s1")
    )
    scenario.when(cmd("SubscribeStudent", course_id="c2", student_id="s1")).then_rejected(
        "course c2 is full"
    )
    scenario.when(cmd("SubscribeStudent", course_id="c9", student_id="s1")).then_rejected(
        "no such course"
    )


def test_given_when_then_rules_of_the_example() -> None:
    """No double subscription, at most MAX_COURSES per student, one claim per username."""
    prior: list[Any] = [StudentRegistered("s1", "Ada")]
    for i in range(MAX_COURSES):
        prior += [CourseDefined(f"c{i}", 10), StudentSubscribed(f"c{i}", "s1")]
    prior.append(CourseDefined("extra", 10))
    scenario = given(courses, *prior, UsernameClaimed("ada", "s1"), registry=registry)
    scenario.when(cmd("SubscribeStudent", course_id="c0", student_id="s1")).then_rejected(
        "student s1 already takes course c0"
    )
    scenario.when(cmd("SubscribeStudent", course_id="extra", student_id="s1")).then_rejected(
        f"student s1 takes {MAX_COURSES} courses already"
    )
    scenario.when(cmd("ClaimUsername", username="ada", student_id="s2")).then_rejected(
        "username ada is taken"
    )
    scenario.when(cmd("ClaimUsername", username="bob", student_id="s2")).then_events(
        UsernameClaimed("bob", "s2")
    )


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the app runs on."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/c.db"


async def _app(url: str) -> chronik.Chronik:
    app = chronik.Chronik(store=url, registry=registry)
    app.add_model(courses)
    return app


async def _decide_then_yield(command: Command, state: Any, call_next: Any) -> list[Any]:
    """Handler middleware that lets every racer decide before any appends (a forced race)."""
    events = list(await call_next(command, state))
    await asyncio.sleep(0.001)
    return events


async def test_dispatch_appends_tagged_events_and_is_idempotent(url: str) -> None:
    """A dispatch stores the decided events tagged in the decider's domain; the same command
    id again returns the first result and appends nothing."""
    async with await _app(url) as app:
        await app.dispatch(cmd("DefineCourse", course_id="c1", capacity=2))
        await app.dispatch(cmd("RegisterStudent", student_id="s1", name="Ada"))
        first = await app.dispatch(
            cmd("SubscribeStudent", command_id="sub-1", course_id="c1", student_id="s1")
        )
        again = await app.dispatch(
            cmd("SubscribeStudent", command_id="sub-1", course_id="c1", student_id="s1")
        )
        assert not first.duplicate and again.duplicate
        assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
        (event,) = first.events
        assert event.tags == ("course:c1", "student:s1") and event.stream.domain == "courses"
        stored = [e async for e in app.store.read_query(Query.of(tags=["student:s1"]))]
        assert [e.type for e in stored] == ["student.registered", "student.subscribed"]
        assert stored[-1].tags == event.tags and stored[-1].position == event.position


async def test_concurrent_subscriptions_never_overbook_a_course(url: str) -> None:
    """Twelve students race for a course with three seats from separate routing keys, all
    deciding before any appends: the condition makes losers decide again, so exactly three get
    in and the rest are refused."""
    async with await _app(url) as app:
        app.use_handler(_decide_then_yield)
        await app.dispatch(cmd("DefineCourse", course_id="c1", capacity=3))
        for i in range(12):
            await app.dispatch(cmd("RegisterStudent", key=f"s{i}", student_id=f"s{i}", name="x"))

        async def subscribe(i: int) -> bool:
            try:
                await app.dispatch(
                    cmd("SubscribeStudent", key=f"s{i}", course_id="c1", student_id=f"s{i}")
                )
            except chronik.CommandRejected as exc:
                assert exc.reason == "course c1 is full"
                return False
            return True

        won = await asyncio.gather(*(subscribe(i) for i in range(12)))
        assert won.count(True) == 3
        seats = [e async for e in app.store.read_query(Query.of(["student.subscribed"]))]
        assert len(seats) == 3


async def test_username_claims_race_to_one_winner(url: str) -> None:
    """Eight concurrent claims of one username, all decided before any appends: one wins, the
    others are refused when they decide again."""
    async with await _app(url) as app:
        app.use_handler(_decide_then_yield)

        async def claim(i: int) -> bool:
            try:
                await app.dispatch(
                    cmd("ClaimUsername", key=f"s{i}", username="ada", student_id=f"s{i}")
                )
            except chronik.CommandRejected:
                return False
            return True

        assert (await asyncio.gather(*(claim(i) for i in range(8)))).count(True) == 1


async def test_middleware_outbox_and_failures_apply_to_dcb_commands(url: str) -> None:
    """Handler middleware sees DCB commands, outbox rules record messages with their events,
    a query, initial or evolve function that fails is a HandlerError and an expected_sequence
    is refused."""
    seen: list[str] = []

    async def spy(command: Command, state: Any, call_next: Any) -> list[Any]:
        seen.append(command.type)
        return list(await call_next(command, state))

    def rule(event: object, data: chronik.PreparedEvent, stream: chronik.StreamId) -> Any:
        from chronik.transports.message import Message

        return Message(topic="courses", id=data.event_id, body=data.payload)

    async with await _app(url) as app:
        app.use_handler(spy)
        app.add_outbox(rule)
        result = await app.dispatch(cmd("DefineCourse", course_id="c1", capacity=2))
        assert seen == ["DefineCourse"]
        rows = await app.store.read_table("outbox_messages")
        assert [r["id"] for r in rows] == [result.events[0].event_id]
        broken = chronik.DcbDecider("broken", lambda c: "nope", lambda c, s: [], lambda s, e: s)  # type: ignore[arg-type,return-value]
        app.add_model(broken)
        with pytest.raises(chronik.HandlerError):
            await app.dispatch(Command(domain="broken", aggregate_id="x", type="T"))

        def fails(*args: Any) -> Any:
            raise KeyError("a bug in the logic")

        everything = lambda c: Query.all()  # noqa: E731
        for name, model in (
            (
                "noinit",
                chronik.DcbDecider("noinit", everything, lambda c, s: [], lambda s, e: s, fails),
            ),
            ("noevolve", chronik.DcbDecider("noevolve", everything, lambda c, s: [], fails)),
        ):
            app.add_model(model)
            with pytest.raises(chronik.HandlerError):  # an initial or evolve that raises
                await app.dispatch(Command(domain=name, aggregate_id="x", type="T"))
        with pytest.raises(chronik.ValidationError) as err:
            await app.dispatch(
                Command(
                    domain="courses",
                    aggregate_id="x",
                    type="DefineCourse",
                    payload={"course_id": "c2", "capacity": 1},
                    expected_sequence=0,
                )
            )
        assert err.value.field == "expected_sequence"


async def test_the_served_example_counts_seats(url: str) -> None:
    """The example's app and read model: two subscriptions show as two seats taken."""
    from chronik.projections import ProjectionProcessor, query
    from examples.courses.app import build_app, projections

    async with build_app(url) as app:
        await app.dispatch(cmd("DefineCourse", course_id="c1", capacity=5))
        for s in ("s1", "s2"):
            await app.dispatch(cmd("RegisterStudent", key=s, student_id=s, name=s))
            await app.dispatch(cmd("SubscribeStudent", key=s, course_id="c1", student_id=s))
        (seats,) = projections(app)
        async with ProjectionProcessor(app.store, seats, heartbeat=0.05) as proc:
            head = await app.store.head()
            assert head is not None
            async with asyncio.timeout(10):
                await proc.wait_for(head)
        rows = await query(app.store, "course_seats", "course_seats")
        assert rows == [{"course_id": "c1", "capacity": 5, "taken": 2}]
