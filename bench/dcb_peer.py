"""The peer side of the DCB speedrun: pyeventsourcing 9.5 doing the course subscriptions.

Two applications, written as eventsourcing's documentation and examples write them
(``examples/coursebooking``: its aggregates version and its refactored DCB version):

- ``EnrolmentWithAggregates``: ``eventsourcing.application.Application`` with a ``Student`` and
  a ``Course`` aggregate on ``eventsourcing.postgres``; joining reads both aggregates
  (``repository.get``), triggers an event on each and saves both in one ``save(student,
  course)`` (one transaction, the (id, version) keys as optimistic concurrency).
- ``EnrolmentWithDCB``: ``eventsourcing.dcb.application.DCBApplication`` with ``Student`` and
  ``Course`` enduring objects and a ``StudentAndCourse`` group, msgpack decisions
  (``eventsourcing.dcb.msgpack``) on ``eventsourcing.dcb.postgres_tt`` (its B-tree tag table);
  joining reads both objects' events with one query (``repository.get_group``) and appends one
  tagged decision under the append condition made from the same query.

Both run on bench's PostgreSQL server, in a fresh database per run, with a pool of ONE
connection (``POSTGRES_POOL_SIZE=1``, ``POSTGRES_MAX_OVERFLOW=0``) and the server's default
durability. The rules are chronik's: a course has 10 places, a student takes at most 10 courses.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.dcb.domain import EnduringObject, Group
from eventsourcing.dcb.msgpack import Decision, InitialDecision, MessagePackMapper
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

PLACES = MAX_COURSES = 10
PEER = f"eventsourcing {version('eventsourcing')}"


class RuleBroken(Exception):
    """A join the rules refuse (never raised by the speedrun: it stays within them)."""


# --- aggregates (eventsourcing.application) ---------------------------------------------------


class Student(Aggregate):
    """A student and the courses it joined."""

    @event("Registered")
    def __init__(self, name: str, max_courses: int) -> None:
        self.name = name
        self.max_courses = max_courses
        self.course_ids: list[UUID] = []

    @event("JoinedCourse")
    def join_course(self, course_id: UUID) -> None:
        """Record a course joined, within the student's limit."""
        if len(self.course_ids) >= self.max_courses:
            raise RuleBroken("too many courses")
        self.course_ids.append(course_id)


class Course(Aggregate):
    """A course and the students it accepted."""

    @event("Registered")
    def __init__(self, name: str, places: int) -> None:
        self.name = name
        self.places = places
        self.student_ids: list[UUID] = []

    @event("AcceptedStudent")
    def accept_student(self, student_id: UUID) -> None:
        """Record a student accepted, once, within the places."""
        if student_id in self.student_ids:
            raise RuleBroken("already joined")
        if len(self.student_ids) >= self.places:
            raise RuleBroken("fully booked")
        self.student_ids.append(student_id)


class EnrolmentWithAggregates(Application[UUID]):
    """The speedrun's operations over two aggregates."""

    def register_student(self, name: str) -> UUID:
        student = Student(name=name, max_courses=MAX_COURSES)
        self.save(student)
        return student.id

    def register_course(self, name: str) -> UUID:
        course = Course(name=name, places=PLACES)
        self.save(course)
        return course.id

    def join_course(self, student_id: UUID, course_id: UUID) -> None:
        student: Student = self.repository.get(student_id)
        course: Course = self.repository.get(course_id)
        student.join_course(course.id)
        course.accept_student(student.id)
        self.save(student, course)


# --- DCB (eventsourcing.dcb) ------------------------------------------------------------------


class StudentJoinedCourse(Decision):
    """One fact about a student and a course."""

    student_id: str
    course_id: str


class DcbStudent(EnduringObject[Decision, str]):
    """A student as an enduring object."""

    class Registered(InitialDecision):
        dcbstudent_id: str
        name: str
        max_courses: int

    def __init__(self, name: str, max_courses: int) -> None:
        self.name = name
        self.max_courses = max_courses
        self.course_ids: list[str] = []

    @event(StudentJoinedCourse)
    def _(self, course_id: str) -> None:
        if len(self.course_ids) >= self.max_courses:
            raise RuleBroken("too many courses")
        self.course_ids.append(course_id)


class DcbCourse(EnduringObject[Decision, str]):
    """A course as an enduring object."""

    class Registered(InitialDecision):
        dcbcourse_id: str
        name: str
        places: int

    def __init__(self, name: str, places: int) -> None:
        self.name = name
        self.places = places
        self.student_ids: list[str] = []

    @event(StudentJoinedCourse)
    def _(self, student_id: str) -> None:
        if student_id in self.student_ids:
            raise RuleBroken("already joined")
        if len(self.student_ids) >= self.places:
            raise RuleBroken("fully booked")
        self.student_ids.append(student_id)


class StudentAndCourse(Group[Decision]):
    """The consistency boundary of a join: the student's and the course's events."""

    def __init__(self, student: DcbStudent | None, course: DcbCourse | None) -> None:
        if student is None or course is None:
            raise RuleBroken("no such student or course")
        self.student = student
        self.course = course

    def student_joins_course(self) -> None:
        self.trigger_event(
            StudentJoinedCourse, student_id=self.student.id, course_id=self.course.id
        )


class EnrolmentWithDCB(DCBApplication):
    """The speedrun's operations over dynamic consistency boundaries."""

    env: Mapping[str, str] = {"MAPPER_TOPIC": get_topic(MessagePackMapper)}

    def register_student(self, name: str) -> str:
        student = DcbStudent(name=name, max_courses=MAX_COURSES)
        self.repository.save(student)
        return student.id

    def register_course(self, name: str) -> str:
        course = DcbCourse(name=name, places=PLACES)
        self.repository.save(course)
        return course.id

    def join_course(self, student_id: str, course_id: str) -> None:
        group = self.repository.get_group(StudentAndCourse, student_id, course_id)
        group.student_joins_course()
        self.repository.save(group)


# --- on PostgreSQL ------------------------------------------------------------------------------


def pg_env(base: str, path: str, persistence: str) -> dict[str, str]:
    """The environment of a peer application on ``base`` in a fresh database (its public
    schema: ``postgres_tt`` names its events table unqualified in a foreign key, so it cannot
    live in another schema), pool of one."""
    url = urlsplit(base)
    database = "p_" + hashlib.sha1(path.encode()).hexdigest()[:16]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return {
        "PERSISTENCE_MODULE": persistence,
        "POSTGRES_DBNAME": database,
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
    }


def speedrun(app: Any, seconds: float) -> float:
    """Iterations of 10 students + 10 courses + 100 joins for ``seconds`` (at least one):
    operations/s."""
    ops, it = 0, 0
    start = time.perf_counter()
    while it == 0 or time.perf_counter() < start + seconds:
        students = [app.register_student(f"student-{it}-{k}") for k in range(10)]
        courses = [app.register_course(f"course-{it}-{k}") for k in range(10)]
        for s in students:
            for c in courses:
                app.join_course(s, c)
        ops += 120
        it += 1
    return ops / (time.perf_counter() - start)


def run_aggregates(base: str, path: str, seconds: float) -> float:
    """The aggregates speedrun on eventsourcing.postgres."""
    app = EnrolmentWithAggregates(pg_env(base, path, "eventsourcing.postgres"))
    try:
        return speedrun(app, seconds)
    finally:
        app.close()


def run_dcb(base: str, path: str, seconds: float) -> float:
    """The DCB speedrun on eventsourcing.dcb.postgres_tt."""
    app = EnrolmentWithDCB(pg_env(base, path, "eventsourcing.dcb.postgres_tt"))
    try:
        return speedrun(app, seconds)
    finally:
        app.close()
