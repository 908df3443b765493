"""The courses example wired in-process: the DCB decider and a read model of seats per course."""

from __future__ import annotations

import chronik
from chronik.projections import Projection, ReadModel, Table
from examples.courses.events import registry
from examples.courses.logic import courses

SEATS = Table("course_seats", {"course_id": str, "capacity": int, "taken": int}, "course_id")


def build_app(store: str | chronik.EventStore = "sqlite:///data/courses.db") -> chronik.Chronik:
    """A Chronik app serving the courses domain."""
    app = chronik.Chronik(store=store, registry=registry)
    app.add_model(courses)
    return app


def projections(app: chronik.Chronik) -> list[Projection]:
    """Seats per course: its capacity and how many are taken."""
    seats = Projection("course_seats", tables=[SEATS])

    @seats.on("course.defined")
    async def defined(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        data = event.json()
        rm.upsert(SEATS.name, course_id=data["course_id"], capacity=data["capacity"], taken=0)

    @seats.on("student.subscribed")
    async def subscribed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        course_id = event.json()["course_id"]
        row = await rm.get(SEATS.name, course_id=course_id)
        if row is not None:
            rm.upsert(SEATS.name, course_id=course_id, taken=row["taken"] + 1)

    return [seats]
