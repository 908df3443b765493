"""Every exception chronik raises, in one module.

    ChronikError
    ├── ConfigurationError          bad store URL, unknown scheme, option out of range
    │   ├── MissingExtraError       a backend whose optional dependency is not installed
    │   ├── PortInUse               a server port (gRPC, HTTP) another process listens on
    │   └── KeyNotLoaded            a personal field's subject key not loaded for a sync decode
    ├── ValidationError             bad input from a caller; nothing was stored (also a ValueError)
    │   ├── InvalidStreamId         domain / aggregate id / tenant out of shape
    │   ├── InvalidEventType        an event type name out of shape
    │   ├── PayloadTooLarge         payload over the store's max_payload_bytes
    │   ├── TooManyEvents           more events in one append than max_append_events
    │   ├── SerializationError      a payload or metadata value that cannot be encoded as JSON
    │   │   └── InvalidValue        a JSON value not carried everywhere (int64, NaN, depth, UTF-8)
    │   ├── InvalidExpectedVersion  an expectation that is not ANY/NO_STREAM/STREAM_EXISTS/int >= 0
    │   ├── InvalidCommand          a command payload that fails its declared schema (fields)
    │   ├── MessageTooLarge         a gRPC message over the limit (grpc.max_message_bytes)
    │   ├── InvalidMessage          a transport message, topic, group or header out of shape
    │   ├── InvalidExport           a line of an export file out of shape (line, field)
    │   └── UnknownProjection       a projection name nobody registered (also a NotFound)
    ├── ConcurrencyError            optimistic concurrency lost
    │   ├── WrongExpectedVersion    the stream was not at the expected version (expected, actual)
    │   ├── AppendConditionFailed   an event matching a DCB append condition came after its position
    │   ├── CheckpointFenced        a checkpoint write from an older lease epoch than the stored one
    │   ├── LeaseHeld               a lease (processor, partition) another owner holds unexpired
    │   ├── LockTimeout             a durable aggregate lock not acquired within its wait
    │   └── ImportConflict          an imported event the target store contradicts (line)
    ├── CommandRejected             business logic refused a command (reason)
    ├── NotFound                    something named that does not exist (404 / NOT_FOUND)
    │   ├── UnknownDomain           a command for a domain nobody handles
    │   ├── UnknownCommandType      a command type its domain does not declare
    │   ├── UnknownEventType        a type name the registry does not allow
    │   └── StreamDeleted           a stream that was hard-deleted (tombstoned) for good
    ├── HandlerError                a command handler failed unexpectedly; nothing was stored
    ├── DuplicateEventError         an event id already stored with different content
    ├── DeserializationError        stored bytes that do not decode into the registered class
    │   └── UndecodableEvent        a stored event that no longer decodes (named, with the repair)
    ├── UpcastError                 an upcaster chain with a missing step or a failing step
    ├── ReadModelError              a read-model write or query the database refused
    ├── ProjectionStopped           a projection stopped (error policy or shutdown) while awaited
    ├── ReplayRefused               a rebuild / reset that would repeat side effects already done
    ├── NotSupported                an operation this store (or backend) does not offer (operation)
    ├── StoreUnavailable            the store could not be reached; outcome may be unknown
    ├── TransportUnavailable        the broker could not be reached; outcome may be unknown
    ├── TransportClosed             an operation on a message transport that was closed
    ├── ConsumerStopped             a transport consumer stopped (failure policy "stop")
    ├── ServiceUnavailable          a remote service (business logic, projector, saga) is down
    ├── AuthenticationError         missing or unknown credentials
    ├── PermissionDenied            credentials that do not allow the operation
    │   └── AdminWritesDisabled     an admin write with no auth configured and none enabled
    ├── Overloaded                  a node at a configured limit (in-flight commands, subscriptions)
    │   └── RateLimited             an API key over its configured rate (``auth.api_keys[].rate``)
    ├── StoreClosed                 an operation on a store that was closed
    └── StoreReadOnly               a write to a read-only store (a hot standby, a group view)

Adapters translate driver errors to these once, at their boundary, with ``raise ... from``.
How each one travels over HTTP and gRPC is one table: ``chronik.server.status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from chronik.error_data import rebuild

# fmt: off
__all__ = [
    "AdminWritesDisabled", "AppendConditionFailed", "AuthenticationError", "CheckpointFenced",
    "ChronikError", "CommandRejected", "ConcurrencyError", "ConfigurationError", "ConsumerStopped",
    "DeserializationError", "DuplicateEventError", "HandlerError", "ImportConflict",
    "InvalidCommand", "InvalidEventType", "InvalidExpectedVersion", "InvalidExport",
    "InvalidMessage", "InvalidStreamId", "InvalidValue", "KeyNotLoaded", "LeaseHeld", "LockTimeout",
    "MessageTooLarge", "MissingExtraError", "NotFound", "Overloaded", "PayloadTooLarge",
    "NotSupported", "PermissionDenied", "PortInUse", "ProjectionStopped", "RateLimited",
    "ReadModelError", "ReplayRefused", "SerializationError",
    "ServiceUnavailable", "StoreClosed", "StoreReadOnly", "StoreUnavailable", "StreamDeleted",
    "TooManyEvents",
    "TransportClosed", "TransportUnavailable", "UndecodableEvent", "UnknownCommandType",
    "UnknownDomain", "UnknownEventType", "UnknownProjection", "UpcastError", "ValidationError",
    "WrongExpectedVersion",
]
# fmt: on


class ChronikError(Exception):
    """Base class of every error chronik raises on purpose."""

    @classmethod
    def from_data(cls, message: str, data: Mapping[str, Any] | None = None) -> Self:
        """The error rebuilt from its message and fields (as a server sent them): through
        its constructor when ``data`` holds what it takes, else with the fields set on a bare
        instance (``chronik.error_data.rebuild``). ``str()`` of the result is ``message``."""
        return rebuild(cls, message, data)


class ConfigurationError(ChronikError):
    """A store URL, option or registration that cannot work."""


class MissingExtraError(ConfigurationError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        self.extra, self.module = extra, module
        super().__init__(
            f"this feature needs the {module!r} package: pip install 'chronik[{extra}]'"
        )


class PortInUse(ConfigurationError):
    """A server could not listen: another process (or server) holds the port."""

    def __init__(self, server: str, host: str, port: int) -> None:
        self.server, self.host, self.port = server, host, port
        super().__init__(f"{server} port {host}:{port} is in use by another process")


class KeyNotLoaded(ConfigurationError):
    """A personal field whose subject key is not in the registry's key ring yet: a sync
    ``encode``/``decode`` cannot fetch it (``await registry.load_keys(...)`` or
    ``await registry.adecode(event)`` can). ``subject``: the subject whose key is missing."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"the key of personal-data subject {subject!r} is not loaded: "
            "await registry.load_keys(...) first, or decode with await registry.adecode(event)"
        )


class ValidationError(ChronikError, ValueError):
    """Input that chronik refuses; nothing was stored. Also a ``ValueError``."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidExport(ValidationError):
    """A line of an export file that is not what the format says; nothing of its batch was
    written. ``line`` is its number (1-based), ``field`` the key at fault when there is one."""

    def __init__(self, line: int, message: str, *, field: str | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}", field=field)


class InvalidStreamId(ValidationError):
    """A domain, aggregate id or tenant that is out of shape."""


class InvalidEventType(ValidationError):
    """An event type name that is out of shape."""


class PayloadTooLarge(ValidationError):
    """A payload larger than the store accepts."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")


class TooManyEvents(ValidationError):
    """More events in one append than the store accepts."""

    def __init__(self, count: int, limit: int) -> None:
        self.count, self.limit = count, limit
        super().__init__(f"{count} events in one append exceed the limit of {limit}")


class SerializationError(ValidationError):
    """A value that cannot be encoded (or a bytes payload that is not what it claims)."""


class InvalidValue(SerializationError):
    """A JSON value chronik does not carry (beyond int64, NaN or Infinity, nested too deep, a lone
    surrogate): somewhere it would go cannot hold it. ``field``: its path (``payload.a[2].qty``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason, field=field or None)


class InvalidExpectedVersion(ValidationError):
    """An expectation that is not ANY, NO_STREAM, STREAM_EXISTS or a sequence >= 0."""


class InvalidCommand(ValidationError):
    """A command payload that does not fit the command's declared schema."""

    def __init__(self, command_type: str, problems: dict[str, str]) -> None:
        self.command_type, self.problems = command_type, problems
        self.fields = sorted(problems)
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
        super().__init__(f"invalid {command_type} payload: {listed}", field=",".join(self.fields))


class MessageTooLarge(ValidationError):
    """A gRPC message larger than the limit (the server's: ``grpc.max_message_bytes``)."""


class InvalidMessage(ValidationError):
    """A transport message (id, topic, group, key, headers, body) out of shape; nothing was sent."""


class CommandRejected(ChronikError):
    """The business logic refused the command; ``reason`` says why. Nothing was stored."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotFound(ChronikError):
    """Something named (domain, command or event type, projection) that does not exist."""


class UnknownDomain(NotFound):
    """A command addressed to a domain that no handler is registered for."""

    def __init__(self, domain: str, known: list[str] | None = None) -> None:
        self.domain = domain
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown domain {domain!r}{hint}")


class UnknownCommandType(NotFound):
    """A command type that its domain does not declare."""

    def __init__(self, domain: str, command_type: str, known: list[str] | None = None) -> None:
        self.domain, self.command_type = domain, command_type
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"domain {domain!r} has no command {command_type!r}{hint}")


class HandlerError(ChronikError):
    """A command handler raised an unexpected exception; the command stored nothing."""

    def __init__(self, domain: str, command_type: str, cause: BaseException) -> None:
        self.domain, self.command_type = domain, command_type
        super().__init__(f"handler of {domain}/{command_type} failed: {cause!r}")


class UnknownProjection(ValidationError, NotFound):
    """A projection name that no processor registered; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        shown = ", ".join(known) if known else "none yet"
        super().__init__(f"unknown projection {name!r}; known projections: {shown}", field="name")


class ConcurrencyError(ChronikError):
    """Optimistic concurrency was lost."""


class WrongExpectedVersion(ConcurrencyError):
    """The stream was not at the version the caller expected; nothing was written."""

    def __init__(self, stream: Any, expected: Any, actual: int | None) -> None:
        self.stream, self.expected, self.actual = stream, expected, actual
        shown = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream} expected {expected}, found {shown}")


class AppendConditionFailed(ConcurrencyError):
    """An event matching an append condition's query exists after its position; nothing was
    written. ``item`` is the index of the query item it matched (``query`` the query's text),
    ``position`` the position of the first such event (its ``str`` form over the wire)."""

    def __init__(self, item: int, position: Any, query: str = "") -> None:
        self.item, self.position, self.query = item, position, query
        shown = f" ({query})" if query else ""
        super().__init__(
            f"append condition failed: item {item} of the query{shown} matches the event "
            f"at position {position}"
        )


class CheckpointFenced(ConcurrencyError):
    """A checkpoint write whose lease epoch is older than the stored one; nothing was written."""

    def __init__(self, name: str, partition: int, epoch: int, stored_epoch: int) -> None:
        self.name, self.partition, self.epoch = name, partition, epoch
        self.stored_epoch = stored_epoch
        super().__init__(
            f"checkpoint {name}[{partition}] is held at epoch {stored_epoch}; "
            f"a write from epoch {epoch} is fenced off"
        )


class LeaseHeld(ConcurrencyError):
    """A lease that another owner holds and has not let expire; the unit wrote nothing."""

    def __init__(self, name: str, partition: int, owner: str) -> None:
        self.name, self.partition, self.owner = name, partition, owner
        super().__init__(f"lease {name}[{partition}] is held by another owner than {owner!r}")


class ImportConflict(ConcurrencyError):
    """An imported event the target store contradicts: its id stored with other content or in
    another stream, or its stream at another version there. Nothing of its batch was written;
    ``line`` is the event's line in the file, ``stream`` and ``event_id`` name it."""

    def __init__(
        self, line: int, message: str, *, stream: str | None = None, event_id: str | None = None
    ) -> None:
        self.line, self.stream, self.event_id = line, stream, event_id
        super().__init__(f"line {line}: {message}")


class LockTimeout(ConcurrencyError):
    """A durable aggregate lock (``DurableLock``) another holder kept ``wait`` s; nothing ran."""

    def __init__(self, stream: Any, wait: float) -> None:
        self.stream, self.wait = stream, wait
        super().__init__(f"the lock on {stream} was not acquired within {wait:g} s")


class DuplicateEventError(ChronikError):
    """An event id that is already stored with different content."""

    def __init__(self, event_id: str, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event {event_id} is already stored {reason}")


class UnknownEventType(NotFound):
    """An event type name (or class) that is not registered."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(f"unknown event type {type_name!r}: register it first")


class StreamDeleted(NotFound):
    """A stream that was hard-deleted: its tombstone refuses every append and read, for good
    (``stream`` names it). Nothing was written."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        super().__init__(f"stream {stream} is deleted (tombstoned): it can never be used again")


class DeserializationError(ChronikError):
    """Stored bytes that do not decode into the registered class."""


class UndecodableEvent(DeserializationError):
    """A stored event that no longer decodes (or upcasts) into its registered class. Events are
    immutable: the repair is code (an upcaster, or the class fixed) so that it decodes again."""

    def __init__(
        self,
        *,
        stream: str,
        sequence: int,
        event_id: str,
        event_type: str,
        schema_version: int,
        reason: str,
        repair: str = "",
    ) -> None:
        self.stream, self.sequence, self.event_id = stream, sequence, event_id
        self.event_type, self.schema_version, self.reason = event_type, schema_version, reason
        self.repair = repair or f"register an upcaster for {event_type} v{schema_version}"
        super().__init__(
            f"event {event_type} v{schema_version} at {stream}#{sequence} (id {event_id}) "
            f"does not decode: {reason}. Repair: {self.repair}; the stored event is never changed"
        )


class UpcastError(ChronikError):
    """An upcaster chain with a missing or failing step."""


class ReadModelError(ChronikError):
    """A read-model write or query the database refused (missing table, constraint, a value a
    column cannot hold); its unit of work wrote nothing. ``table``/``column``: the culprit."""

    def __init__(
        self, message: str, *, table: str | None = None, column: str | None = None
    ) -> None:
        self.table, self.column = table, column
        super().__init__(message)


class ProjectionStopped(ChronikError):
    """A projection stopped (its error policy said stop, or it was shut down) while awaited."""


class ReplayRefused(ChronikError):
    """An operator action (rebuild, reset) refused because replaying the projection would repeat
    side effects it already had (it declared ``replay="refuse"``); nothing was changed."""

    def __init__(self, projection: str, action: str, reason: str) -> None:
        self.projection, self.action, self.reason = projection, action, reason
        super().__init__(
            f"{action} of {projection} refused: replaying it would repeat side effects that "
            f"already happened ({reason}). Nothing was changed; a reset to a position after "
            "the last event it handled is allowed"
        )


class NotSupported(ChronikError):
    """An operation the store (or another backend) does not offer, e.g. rewriting an event in
    place (redaction) on a store without it; ``operation`` names it, nothing was changed."""

    def __init__(self, operation: str, backend: str) -> None:
        self.operation, self.backend = operation, backend
        super().__init__(f"{backend} does not support {operation}: nothing was changed")


class StoreUnavailable(ChronikError):
    """The store could not be reached; ``outcome_unknown`` says whether a write may have landed."""

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message)


class ServiceUnavailable(ChronikError):
    """A remote service chronik calls could not be reached in time; nothing was stored."""


class AuthenticationError(ChronikError):
    """A call without credentials, or with credentials chronik does not know."""


class PermissionDenied(ChronikError):
    """Known credentials that do not allow this operation."""


class AdminWritesDisabled(PermissionDenied):
    """An admin write (reset, rebuild, pause, resume, dead-letter retry/drop) on a server with
    no auth configured, where admin writes were not enabled explicitly; ``key`` is the config
    key that enables them (``http.admin_writes`` or ``grpc.admin_writes``)."""

    def __init__(self, key: str = "http.admin_writes") -> None:
        self.key = key
        where = "GrpcServer" if key.startswith("grpc.") else "create_http_app"
        super().__init__(
            "admin writes are disabled: this server has no auth configured. Configure auth "
            "(an API key or JWT with the admin right), or enable them explicitly with "
            f"`{key}: true` in the config ({where}(..., admin_writes=True))"
        )


class Overloaded(ChronikError):
    """A node at one of its configured limits refused the request at once, before doing any of
    it (nothing was stored); ``limit`` names the limit (``limits.max_inflight_commands``),
    ``retry_after_ms`` is how long to wait before trying again."""

    def __init__(self, limit: str, retry_after_ms: int, message: str = "") -> None:
        self.limit, self.retry_after_ms = limit, retry_after_ms
        super().__init__(message or f"overloaded: {limit} reached; retry after {retry_after_ms} ms")


class RateLimited(Overloaded):
    """An API key that sent more requests than its configured rate (``auth.api_keys[].rate``);
    ``key`` is the key's name. Nothing was done; retry after ``retry_after_ms``."""

    def __init__(self, key: str, retry_after_ms: int, limit: str = "") -> None:
        self.key = key
        limit = limit or f"auth.api_keys[{key}].rate"
        super().__init__(
            limit,
            retry_after_ms,
            f"rate limited: API key {key!r} is over its rate ({limit}); "
            f"retry after {retry_after_ms} ms",
        )


class StoreClosed(ChronikError):
    """An operation on a store that has been closed."""


class StoreReadOnly(ChronikError):
    """A write to a store that only reads: a PostgreSQL hot standby (writes go to its
    primary) or a ``GroupStore`` view; ``store`` names it (no password), nothing was stored."""

    def __init__(self, store: str, reason: str = "read-only") -> None:
        self.store, self.reason = store, reason
        super().__init__(f"{store} is read-only ({reason}): nothing was written")


class TransportUnavailable(ChronikError):
    """The broker could not be reached; ``outcome_unknown``: a publish may have landed (retry)."""

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message)


class TransportClosed(ChronikError):
    """An operation on a message transport (or one of its consumers) that has been closed."""


class ConsumerStopped(ChronikError):
    """A transport consumer stopped: its failure policy said stop, or it was closed."""
