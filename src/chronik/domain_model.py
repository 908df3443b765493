"""The model the command bus runs: ``DomainModel``, the command schemas it checks, snapshots.

Both styles of business logic (``chronik.aggregate.Aggregate`` classes and
``chronik.decider.Decider`` functions) become a ``DomainModel``: what the command bus, the
repository and the test kit use, so a command runs the same code everywhere. Import these names
from ``chronik`` or ``chronik.aggregate``; this module imports only messages and errors.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from chronik.errors import ConfigurationError, InvalidCommand, UnknownCommandType
from chronik.messages import DOMAIN_RE, Command, Snapshot, StreamId

__all__ = ["CommandSpec", "DomainModel", "Snapshots", "check_domain", "is_schema"]


class Snapshots(msgspec.Struct, frozen=True):
    """When to snapshot a stream: every ``every`` events, or when a load took longer."""

    every: int | None = 100
    slower_than_ms: float | None = None

    def __post_init__(self) -> None:
        if self.every is not None and (type(self.every) is not int or self.every < 1):
            raise ConfigurationError(f"Snapshots.every must be an int >= 1, not {self.every!r}")
        if self.slower_than_ms is not None and self.slower_than_ms < 0:
            raise ConfigurationError("Snapshots.slower_than_ms must be >= 0")


# --- command schemas --------------------------------------------------------------------------


def is_schema(tp: object) -> bool:
    """Whether ``tp`` can be a payload schema (a msgspec Struct or a dataclass)."""
    return isinstance(tp, type) and (issubclass(tp, msgspec.Struct) or dataclasses.is_dataclass(tp))


def _schema_fields(schema: type[Any]) -> dict[str, tuple[Any, bool]]:
    """Field name -> (type, required) of a Struct or dataclass."""
    if issubclass(schema, msgspec.Struct):
        return {f.encode_name: (f.type, f.required) for f in msgspec.structs.fields(schema)}
    hints = typing.get_type_hints(schema)
    return {
        f.name: (
            hints.get(f.name, Any),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(schema)
    }


class CommandSpec:
    """A command type of a domain and the schema its payload must fit (None: any JSON object)."""

    def __init__(self, name: str, schema: type[Any] | None = None) -> None:
        if schema is not None and not is_schema(schema):
            raise ConfigurationError(f"command schema {schema!r} is not a Struct or dataclass")
        self.name = name
        self.schema = schema
        self._fields = _schema_fields(schema) if schema is not None else {}

    def parse(self, payload: Any) -> Any:
        """The payload as the schema's type; InvalidCommand listing every bad field."""
        schema = self.schema
        if type(payload) is dict and schema is not None:  # the common case, checked first
            try:
                return msgspec.convert(payload, schema)
            except (msgspec.ValidationError, TypeError, ValueError):
                pass  # the slow path below names every bad field
        if isinstance(payload, bytes | bytearray | memoryview):
            try:
                payload = msgspec.json.decode(payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise InvalidCommand(self.name, {"payload": f"not valid JSON: {exc}"}) from None
        if schema is None:
            if not isinstance(payload, Mapping):
                raise InvalidCommand(self.name, {"payload": "expected a JSON object"})
            return payload
        if isinstance(payload, schema):
            return payload
        if not isinstance(payload, Mapping):
            raise InvalidCommand(self.name, {"payload": "expected a JSON object"})
        try:
            return msgspec.convert(payload, schema)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            first_error = str(exc)
        problems: dict[str, str] = {}  # find every bad field, not only the first
        for name, (tp, required) in self._fields.items():
            if name not in payload:
                if required:
                    problems[name] = "required"
                continue
            try:
                msgspec.convert(payload[name], tp)
            except msgspec.ValidationError as exc:
                problems[name] = str(exc)
        if issubclass(schema, msgspec.Struct) and schema.__struct_config__.forbid_unknown_fields:
            for key in payload:
                if key not in self._fields:
                    problems[str(key)] = "unknown field"
        raise InvalidCommand(self.name, problems or {"payload": first_error})


# --- the model the bus runs -------------------------------------------------------------------


class DomainModel(abc.ABC):
    """The in-process business logic of one domain."""

    domain: str
    state_type: str
    state_version: int
    snapshots: Snapshots | None
    commands: dict[str, CommandSpec] | None  # None: any command type is passed to decide
    typed_events: bool = True  # False: decide returns EventData, evolve gets RecordedEvents
    cacheable: bool = True  # False: the bus loads the state for every command

    def parse(self, command: Command) -> Command:
        """The command with its payload checked against (and converted to) its schema."""
        if self.commands is None:
            spec = CommandSpec(command.type)
        else:
            found = self.commands.get(command.type)
            if found is None:
                raise UnknownCommandType(self.domain, command.type, list(self.commands))
            spec = found
        payload = spec.parse(command.payload)
        if payload is command.payload:
            return command
        return msgspec.structs.replace(command, payload=payload)

    @abc.abstractmethod
    def initial(self, aggregate_id: str) -> Any:
        """The state of an aggregate with no events."""

    @abc.abstractmethod
    def evolve(self, state: Any, event: Any) -> Any:
        """The state after one (decoded) event."""

    def evolver(self) -> Callable[[Any, Any], Any]:
        """``evolve`` as the callable to fold many events with (a Decider gives its function
        itself: no call in between per event)."""
        return self.evolve

    @abc.abstractmethod
    def decide(self, command: Command, state: Any) -> list[Any]:
        """The events a (parsed) command produces (an empty list: none)."""

    def settle(self, state: Any, events: list[Any]) -> Any:
        """The state after the events ``decide`` returned (checked and typed by the bus)."""
        for event in events:
            state = self.evolve(state, event)
        return state

    @abc.abstractmethod
    def encode_state(self, state: Any) -> bytes:
        """The state as snapshot bytes."""

    @abc.abstractmethod
    def decode_state(self, snapshot: Snapshot) -> Any:
        """The state stored in a snapshot (raises on a mismatch)."""

    def snapshot_after(self, state: Any, stream: StreamId, version: int) -> Snapshot | None:
        """A snapshot the logic itself asks to store after a command (default: none)."""
        return None


def check_domain(domain: str) -> None:
    """ConfigurationError unless ``domain`` is a valid domain name (``DOMAIN_RE``)."""
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise ConfigurationError(f"invalid domain {domain!r}: expected [a-z][a-z0-9_.-]{{0,63}}")
