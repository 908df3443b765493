"""The courses decisions over DCB: each command reads the events of the entities it involves.

A course has a capacity, a student takes at most ``MAX_COURSES`` courses and never the same one
twice, a username is claimed once. No aggregate holds a course and a student together: each
command's query names the events its decision needs, and chronik appends the decided events only
if none of those changed since they were read (``chronik.DcbDecider``).
"""

from __future__ import annotations

from typing import Any

import msgspec

import chronik
from chronik import Query, QueryItem
from examples.courses.events import (
    ClaimUsername,
    CourseDefined,
    DefineCourse,
    RegisterStudent,
    StudentRegistered,
    StudentSubscribed,
    SubscribeStudent,
    UsernameClaimed,
    tags,
)

MAX_COURSES = 5


class Course(msgspec.Struct):
    capacity: int = 0
    students: set[str] = msgspec.field(default_factory=set)


class Seen(msgspec.Struct):
    """What the events a command read say about the courses, students and usernames in it."""

    courses: dict[str, Course] = msgspec.field(default_factory=dict)
    students: dict[str, set[str]] = msgspec.field(default_factory=dict)  # id -> its courses
    usernames: set[str] = msgspec.field(default_factory=set)


def query(command: chronik.Command) -> Query:
    """The events a command's decision needs."""
    match command.payload:
        case DefineCourse(course_id=c):
            return Query.of(["course.defined"], [f"course:{c}"])
        case RegisterStudent(student_id=s):
            return Query.of(["student.registered"], [f"student:{s}"])
        case SubscribeStudent(course_id=c, student_id=s):
            return Query(
                [
                    QueryItem(["course.defined", "student.subscribed"], [f"course:{c}"]),
                    QueryItem(["student.registered", "student.subscribed"], [f"student:{s}"]),
                ]
            )
        case ClaimUsername(username=u):
            return Query.of(["username.claimed"], [f"username:{u}"])
    raise chronik.CommandRejected(f"unexpected command {command.type}")  # pragma: no cover


def decide(command: chronik.Command, seen: Seen, max_courses: int = MAX_COURSES) -> Any:
    """The events a command produces, or a rejection."""
    match command.payload:
        case DefineCourse(course_id=c, capacity=capacity):
            if c in seen.courses:
                raise chronik.CommandRejected(f"course {c} already exists")
            return CourseDefined(c, capacity)
        case RegisterStudent(student_id=s, name=name):
            if s in seen.students:
                raise chronik.CommandRejected(f"student {s} already exists")
            return StudentRegistered(s, name)
        case SubscribeStudent(course_id=c, student_id=s):
            course, courses = seen.courses.get(c), seen.students.get(s)
            if course is None or courses is None:
                raise chronik.CommandRejected(
                    "no such course" if course is None else "no such student"
                )
            if c in courses:
                raise chronik.CommandRejected(f"student {s} already takes course {c}")
            if len(course.students) >= course.capacity:
                raise chronik.CommandRejected(f"course {c} is full")
            if len(courses) >= max_courses:
                raise chronik.CommandRejected(f"student {s} takes {max_courses} courses already")
            return StudentSubscribed(c, s)
        case ClaimUsername(username=u, student_id=s):
            if u in seen.usernames:
                raise chronik.CommandRejected(f"username {u} is taken")
            return UsernameClaimed(u, s)
    raise chronik.CommandRejected(f"unexpected command {command.type}")  # pragma: no cover


def evolve(seen: Seen, event: object) -> Seen:
    """What one more event says."""
    match event:
        case CourseDefined(course_id=c, capacity=capacity):
            seen.courses.setdefault(c, Course()).capacity = capacity
        case StudentRegistered(student_id=s):
            seen.students.setdefault(s, set())
        case StudentSubscribed(course_id=c, student_id=s):
            seen.courses.setdefault(c, Course()).students.add(s)
            seen.students.setdefault(s, set()).add(c)
        case UsernameClaimed(username=u):
            seen.usernames.add(u)
    return seen


def courses_decider(max_courses: int = MAX_COURSES) -> chronik.DcbDecider:
    """The courses domain, a student taking at most ``max_courses`` courses."""
    return chronik.DcbDecider(
        "courses",
        query,
        lambda command, seen: decide(command, seen, max_courses),
        evolve,
        Seen,
        tags=tags,
        commands={
            "DefineCourse": DefineCourse,
            "RegisterStudent": RegisterStudent,
            "SubscribeStudent": SubscribeStudent,
            "ClaimUsername": ClaimUsername,
        },
    )


courses = courses_decider()
