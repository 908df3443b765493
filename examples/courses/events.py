"""The courses example's messages: commands (payload schemas) and events (registered, tagged)."""

from __future__ import annotations

from typing import Annotated

import msgspec

import chronik

registry = chronik.EventRegistry()

Seats = Annotated[int, msgspec.Meta(ge=1, le=10_000)]

# --- commands ---------------------------------------------------------------------------------


class DefineCourse(msgspec.Struct, forbid_unknown_fields=True):
    course_id: str
    capacity: Seats


class RegisterStudent(msgspec.Struct, forbid_unknown_fields=True):
    student_id: str
    name: str


class SubscribeStudent(msgspec.Struct, forbid_unknown_fields=True):
    course_id: str
    student_id: str


class ClaimUsername(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    student_id: str


# --- events -----------------------------------------------------------------------------------


@registry.event("course.defined")
class CourseDefined(msgspec.Struct):
    course_id: str
    capacity: int


@registry.event("student.registered")
class StudentRegistered(msgspec.Struct):
    student_id: str
    name: str


@registry.event("student.subscribed")
class StudentSubscribed(msgspec.Struct):
    course_id: str
    student_id: str


@registry.event("username.claimed")
class UsernameClaimed(msgspec.Struct):
    username: str
    student_id: str


def tags(event: object) -> list[str]:
    """The tags of an event: the entities it is about."""
    match event:
        case CourseDefined(course_id=c):
            return [f"course:{c}"]
        case StudentRegistered(student_id=s):
            return [f"student:{s}"]
        case StudentSubscribed(course_id=c, student_id=s):
            return [f"course:{c}", f"student:{s}"]
        case UsernameClaimed(username=u, student_id=s):
            return [f"username:{u}", f"student:{s}"]
    return []
