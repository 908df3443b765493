"""The one error table (chronik.server.status): every error class, both protocols, both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chronik import errors
from chronik.errors import ChronikError
from chronik.server import status
from chronik.server.problems import error_response


def _tree(cls: type[ChronikError] = ChronikError) -> list[type[ChronikError]]:
    """``cls`` and every subclass of it, recursively, defined in chronik.errors."""
    found = [cls]
    for sub in cls.__subclasses__():
        if sub.__module__ == "chronik.errors":
            found += [c for c in _tree(sub) if c not in found]
    return found


TREE = _tree()


def _instance(cls: type[ChronikError]) -> ChronikError:
    """An instance of ``cls`` with its message and the fields problems read (``field``,
    ``reason``), through its constructor where these suffice, else bare."""
    message = f"a {cls.__name__}"
    return cls.from_data(message, {"field": None, "reason": message})


def test_the_walk_sees_the_whole_tree() -> None:
    """The recursive walk finds every class chronik.errors exports, grandchildren included."""
    exported = {getattr(errors, n) for n in errors.__all__}
    assert set(TREE) == exported
    assert errors.UndecodableEvent in TREE and errors.AdminWritesDisabled in TREE


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_error_class_has_its_own_row(cls: type[ChronikError]) -> None:
    """Each class of the tree is written in the table itself, not left to a parent's row."""
    assert cls in status.TABLE, f"{cls.__name__} has no row in chronik.server.status.TABLE"


def test_a_new_error_class_without_a_row_is_seen() -> None:
    """The row check fails for a class added to the tree without a row of its own."""

    class Newcomer(errors.ConcurrencyError):
        """A subclass the table does not know, posing as one of chronik.errors."""

        __module__ = "chronik.errors"

    try:
        missing = [c for c in _tree() if c not in status.TABLE]
    finally:
        Newcomer.__module__ = "tests"
    assert missing == [Newcomer]
    assert status.wire_status(Newcomer()) == status.TABLE[errors.ConcurrencyError]


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_http_status_and_grpc_code_go_together(cls: type[ChronikError]) -> None:
    """Each row pairs an HTTP status with a gRPC code that the pairs table allows."""
    row = status.TABLE[cls]
    assert row.grpc in status.HTTP_GRPC_PAIRS[row.http], (cls.__name__, row)
    assert row.problem_type == f"urn:chronik:problem:{row.problem}"


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_grpc_round_trip_gives_back_the_class(cls: type[ChronikError]) -> None:
    """exception -> gRPC code + class name -> exception is the same class, same message."""
    exc = _instance(cls)
    row = status.wire_status(exc)
    back = status.error_from_grpc(row.grpc, str(exc), type(exc).__name__)
    assert type(back) is cls and str(back) == str(exc)


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_http_round_trip_gives_back_the_class(cls: type[ChronikError]) -> None:
    """exception -> problem+json (as the HTTP server writes it) -> exception is the same class,
    with the status and problem type of its row."""
    exc = _instance(cls)
    response = error_response(exc)
    body: dict[str, Any] = json.loads(bytes(response.body))
    row = status.TABLE[cls]
    assert response.status_code == body["status"] == row.http
    assert body["type"] == row.problem_type
    back = status.error_from_problem(body)
    assert type(back) is cls


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_without_a_class_name_the_code_gives_an_equivalent(cls: type[ChronikError]) -> None:
    """From a server that names no class (a service in another language), the code alone gives
    the class declared for it, and that class travels with the same code and status."""
    row = status.TABLE[cls]
    by_code = status.error_from_grpc(row.grpc, "m")
    by_status = status.error_from_http(row.http, "m")
    assert status.TABLE[type(by_code)].grpc == row.grpc
    assert status.TABLE[type(by_status)].http == row.http


@pytest.mark.parametrize(
    ("cls", "http", "grpc"),
    [
        (errors.DuplicateEventError, 409, "ALREADY_EXISTS"),
        (errors.WrongExpectedVersion, 409, "ABORTED"),
        (errors.CommandRejected, 422, "FAILED_PRECONDITION"),
        (errors.UnknownDomain, 404, "NOT_FOUND"),
        (errors.InvalidValue, 400, "INVALID_ARGUMENT"),
        (errors.UndecodableEvent, 422, "DATA_LOSS"),
        (errors.TransportUnavailable, 503, "UNAVAILABLE"),
        (errors.HandlerError, 500, "INTERNAL"),
    ],
)
def test_one_answer_for_both_protocols(cls: type[ChronikError], http: int, grpc: str) -> None:
    """The errors the four old tables disagreed on have one answer in both protocols."""
    row = status.wire_status(cls)
    assert (row.http, row.grpc) == (http, grpc)


def test_not_found_without_a_name_is_the_generic_not_found() -> None:
    """NOT_FOUND / 404 without a class name is NotFound, the parent of every unknown-X."""
    assert type(status.error_from_grpc("NOT_FOUND", "m")) is errors.NotFound
    assert type(status.error_from_http(404, "m")) is errors.NotFound
    for cls in (errors.UnknownDomain, errors.UnknownCommandType, errors.UnknownProjection):
        assert issubclass(cls, errors.NotFound)


def test_a_bug_and_a_users_subclass() -> None:
    """A non-chronik exception is INTERNAL / 500; a user's subclass takes its parent's row."""

    class OutOfStock(errors.CommandRejected):
        """A user's own rejection."""

    assert status.wire_status(KeyError("x")) == status.INTERNAL
    assert status.wire_status(OutOfStock("none left")).grpc == "FAILED_PRECONDITION"


def test_a_name_that_is_not_an_error_class_is_ignored() -> None:
    """A class name outside chronik.errors' exports falls back to the code's class."""
    assert type(status.error_from_grpc("ABORTED", "m", "os")) is errors.ConcurrencyError
    assert type(status.error_from_http(503, "m", "InternalError")) is errors.ServiceUnavailable


def test_fields_travel_with_the_class() -> None:
    """A named class is rebuilt through its constructor with the fields that came along."""
    back = status.error_from_grpc(
        "ABORTED", "stream x expected 1, found version 2", "WrongExpectedVersion",
        {"stream": "x", "expected": 1, "actual": 2},
    )  # fmt: skip
    assert isinstance(back, errors.WrongExpectedVersion) and back.actual == 2


@pytest.mark.parametrize(
    "cls",
    [
        errors.ValidationError,
        errors.InvalidValue,
        errors.InvalidStreamId,
        errors.InvalidEventType,
        errors.InvalidExpectedVersion,
        errors.InvalidCommand,
        errors.PayloadTooLarge,
        errors.UnknownProjection,
    ],
)
def test_value_errors_are_value_errors(cls: type[ChronikError]) -> None:
    """Errors about a bad value are ValueErrors too, with ChronikError the first base."""
    assert issubclass(cls, ValueError) and issubclass(cls, ChronikError)
    assert errors.ValidationError.__bases__[0] is ChronikError
