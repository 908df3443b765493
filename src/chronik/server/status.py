"""The one table from chronik's errors to the wire: HTTP status, gRPC code and problem type.

Every error class in ``chronik.errors`` has its own row (a test walks the tree); an error class
defined elsewhere (a user's subclass) takes the row of its nearest ancestor, anything that is
not a chronik error is a bug: 500 / INTERNAL without details. Both directions live here:

- exception -> wire: ``wire_status(exc)`` (``.http``, ``.grpc``, ``.problem_type``);
- wire -> exception: ``error_from_grpc`` and ``error_from_http`` rebuild the class the server
  named (with ``ChronikError.from_data``), else the code's fallback class (``GRPC_FALLBACK``,
  ``HTTP_FALLBACK``: NOT_FOUND / 404 without a class name is the generic ``NotFound``).

gRPC codes are written as their names (``"NOT_FOUND"``), so this module imports neither grpc nor
starlette: the client, the SDK and both servers import it. It imports ``chronik.errors`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from chronik import errors as e

__all__ = [
    "GRPC_FALLBACK",
    "HTTP_FALLBACK",
    "HTTP_GRPC_PAIRS",
    "INTERNAL",
    "PROBLEM_TYPE_PREFIX",
    "TABLE",
    "WireStatus",
    "error_class",
    "error_from_grpc",
    "error_from_http",
    "error_from_problem",
    "grpc_error_class",
    "http_error_class",
    "wire_status",
]

#: the prefix of every chronik problem type (RFC 9457 ``type``), followed by the row's slug
PROBLEM_TYPE_PREFIX: Final = "urn:chronik:problem:"


@dataclass(frozen=True, slots=True)
class WireStatus:
    """How one error class travels: its HTTP status, gRPC code name and problem slug."""

    http: int
    grpc: str
    problem: str

    @property
    def problem_type(self) -> str:
        """The problem+json ``type`` URI (``urn:chronik:problem:wrong-expected-version``)."""
        return PROBLEM_TYPE_PREFIX + self.problem


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _rows(http: int, grpc: str, *classes: type[e.ChronikError]) -> dict[type, WireStatus]:
    return {cls: WireStatus(http, grpc, _slug(cls.__name__)) for cls in classes}


#: every error class of chronik.errors -> how it travels (one explicit row each)
TABLE: Final[Mapping[type, WireStatus]] = {
    **_rows(500, "INTERNAL", e.ChronikError, e.HandlerError),
    **_rows(
        500,
        "FAILED_PRECONDITION",  # the server's own setup or data: no client can fix it
        e.ConfigurationError,
        e.MissingExtraError,
        e.PortInUse,
        e.ReadModelError,
        e.KeyNotLoaded,
    ),
    **_rows(
        400,
        "INVALID_ARGUMENT",
        e.ValidationError,
        e.InvalidStreamId,
        e.InvalidEventType,
        e.TooManyEvents,
        e.SerializationError,
        e.InvalidValue,
        e.InvalidExpectedVersion,
        e.InvalidCommand,
        e.InvalidMessage,
        e.InvalidExport,
    ),
    **_rows(413, "RESOURCE_EXHAUSTED", e.PayloadTooLarge, e.MessageTooLarge),
    **_rows(429, "RESOURCE_EXHAUSTED", e.Overloaded, e.RateLimited),
    **_rows(
        404,
        "NOT_FOUND",
        e.NotFound,
        e.UnknownDomain,
        e.UnknownCommandType,
        e.UnknownEventType,
        e.UnknownProjection,
        e.StreamDeleted,
    ),
    **_rows(
        409,
        "ABORTED",
        e.ConcurrencyError,
        e.WrongExpectedVersion,
        e.AppendConditionFailed,
        e.CheckpointFenced,
        e.LeaseHeld,
        e.LockTimeout,
        e.ImportConflict,
    ),
    **_rows(409, "ALREADY_EXISTS", e.DuplicateEventError),
    **_rows(409, "FAILED_PRECONDITION", e.ReplayRefused),
    **_rows(409, "FAILED_PRECONDITION", e.NotSupported),
    **_rows(422, "FAILED_PRECONDITION", e.CommandRejected, e.UpcastError),
    **_rows(422, "DATA_LOSS", e.DeserializationError, e.UndecodableEvent),
    **_rows(
        503,
        "UNAVAILABLE",
        e.StoreUnavailable,
        e.StoreClosed,
        e.StoreReadOnly,
        e.ServiceUnavailable,
        e.TransportUnavailable,
        e.TransportClosed,
        e.ConsumerStopped,
        e.ProjectionStopped,
    ),
    **_rows(401, "UNAUTHENTICATED", e.AuthenticationError),
    **_rows(403, "PERMISSION_DENIED", e.PermissionDenied, e.AdminWritesDisabled),
}

#: a bug (an exception that is not a chronik error): no details go on the wire
INTERNAL: Final = WireStatus(500, "INTERNAL", "internal-error")

#: which gRPC codes an HTTP status may go with (every row keeps to it)
HTTP_GRPC_PAIRS: Final[Mapping[int, frozenset[str]]] = {
    400: frozenset({"INVALID_ARGUMENT"}),
    401: frozenset({"UNAUTHENTICATED"}),
    403: frozenset({"PERMISSION_DENIED"}),
    404: frozenset({"NOT_FOUND"}),
    409: frozenset({"ABORTED", "ALREADY_EXISTS", "FAILED_PRECONDITION"}),
    413: frozenset({"RESOURCE_EXHAUSTED"}),
    429: frozenset({"RESOURCE_EXHAUSTED"}),
    422: frozenset({"FAILED_PRECONDITION", "DATA_LOSS"}),
    500: frozenset({"INTERNAL", "FAILED_PRECONDITION"}),
    503: frozenset({"UNAVAILABLE"}),
}

#: the class a gRPC code stands for when the server named none (e.g. a service in Go)
GRPC_FALLBACK: Final[Mapping[str, type[e.ChronikError]]] = {
    "INVALID_ARGUMENT": e.ValidationError,
    "UNAUTHENTICATED": e.AuthenticationError,
    "PERMISSION_DENIED": e.PermissionDenied,
    "NOT_FOUND": e.NotFound,
    "ABORTED": e.ConcurrencyError,
    "ALREADY_EXISTS": e.DuplicateEventError,
    "FAILED_PRECONDITION": e.CommandRejected,
    "RESOURCE_EXHAUSTED": e.MessageTooLarge,
    "DATA_LOSS": e.DeserializationError,
    "UNAVAILABLE": e.ServiceUnavailable,
    "DEADLINE_EXCEEDED": e.ServiceUnavailable,  # the client's own deadline: outcome unknown
    "INTERNAL": e.ChronikError,
}

#: the class an HTTP status stands for when the problem named none
HTTP_FALLBACK: Final[Mapping[int, type[e.ChronikError]]] = {
    400: e.ValidationError,
    401: e.AuthenticationError,
    403: e.PermissionDenied,
    404: e.NotFound,
    409: e.ConcurrencyError,
    413: e.PayloadTooLarge,
    429: e.Overloaded,
    422: e.CommandRejected,
    500: e.ChronikError,
    503: e.ServiceUnavailable,
}


def wire_status(exc: BaseException | type[BaseException]) -> WireStatus:
    """How an error travels: its class's row, else its nearest ancestor's; INTERNAL for a bug."""
    cls = exc if isinstance(exc, type) else type(exc)
    for base in cls.__mro__:
        row = TABLE.get(base)
        if row is not None:
            return row
    return INTERNAL


def error_class(name: str) -> type[e.ChronikError] | None:
    """The chronik error class called ``name`` (as a server sent it), or None."""
    if name not in e.__all__:
        return None
    cls = getattr(e, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, e.ChronikError) else None


def grpc_error_class(code: str, name: str = "") -> type[e.ChronikError]:
    """The class a failed gRPC call stands for: ``name`` (the class the server sent), else the
    code's fallback (ChronikError for a code with none)."""
    return error_class(name) or GRPC_FALLBACK.get(code, e.ChronikError)


def http_error_class(status: int, name: str = "") -> type[e.ChronikError]:
    """The class an HTTP problem stands for: ``name`` (the problem's title), else the status's
    fallback (ChronikError for a status with none)."""
    return error_class(name) or HTTP_FALLBACK.get(status, e.ChronikError)


def error_from_grpc(
    code: str, message: str, name: str = "", data: Mapping[str, Any] | None = None
) -> e.ChronikError:
    """The error a failed gRPC call stands for, rebuilt with the ``data`` the server sent."""
    return grpc_error_class(code, name).from_data(message, data)


def error_from_http(
    status: int, message: str, name: str = "", data: Mapping[str, Any] | None = None
) -> e.ChronikError:
    """The error an HTTP problem stands for, rebuilt with its fields."""
    return http_error_class(status, name).from_data(message, data)


def error_from_problem(problem: Mapping[str, Any]) -> e.ChronikError:
    """The error an ``application/problem+json`` body (as chronik writes it) stands for."""
    standard = {"type", "title", "status", "detail", "instance"}
    data = {k: v for k, v in problem.items() if k not in standard}
    status = problem.get("status")
    return error_from_http(
        status if isinstance(status, int) else 500,
        str(problem.get("detail", "")),
        str(problem.get("title", "")),
        data,
    )
