"""Business logic in two styles: aggregate classes and decider functions, behind one model.

A *decider* is three plain functions: ``decide(command, state) -> event | [events] | None``
(raise ``CommandRejected`` to refuse), ``evolve(state, event) -> state`` and ``initial()``.
An *aggregate* is a class whose command methods check invariants and ``emit`` typed events, and
whose apply methods change its fields. Both become a ``DomainModel``: what the command bus, the
repository and the test kit use, so a command runs the same code everywhere.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NoReturn, TypeVar

import msgspec

from chronik.errors import CommandRejected, ConfigurationError, InvalidCommand, UnknownCommandType
from chronik.messages import _DOMAIN_RE, Command, Snapshot, StreamId

__all__ = [
    "Aggregate",
    "CommandSpec",
    "Decider",
    "DomainModel",
    "Snapshots",
    "apply",
    "command",
]

F = TypeVar("F", bound=Callable[..., Any])
_encoder = msgspec.json.Encoder()


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


def _is_schema(tp: object) -> bool:
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
        if schema is not None and not _is_schema(schema):
            raise ConfigurationError(f"command schema {schema!r} is not a Struct or dataclass")
        self.name = name
        self.schema = schema
        self._fields = _schema_fields(schema) if schema is not None else {}

    def parse(self, payload: Any) -> Any:
        """The payload as the schema's type; InvalidCommand listing every bad field."""
        if isinstance(payload, bytes | bytearray | memoryview):
            try:
                payload = msgspec.json.decode(payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise InvalidCommand(self.name, {"payload": f"not valid JSON: {exc}"}) from None
        schema = self.schema
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


def _events_of(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, list | tuple):
        return list(result)
    return [result]


class Decider(DomainModel):
    """Functional business logic: ``decide``, ``evolve`` and ``initial`` for one domain.

    ``commands`` maps command type names to payload schemas (a Struct or dataclass, or None for
    any JSON object); without it every command type reaches ``decide``. ``state_type`` is the
    class snapshots decode into (default: the type of ``initial()``).
    """

    def __init__(
        self,
        domain: str,
        decide: Callable[[Command, Any], Any],
        evolve: Callable[[Any, Any], Any],
        initial: Callable[[], Any] = dict,
        *,
        commands: Mapping[str, type[Any] | None] | None = None,
        snapshots: Snapshots | None = None,
        state_type: Any = None,
        state_version: int = 1,
    ) -> None:
        _check_domain(domain)
        self.domain = domain
        self._decide = decide
        self._evolve = evolve
        self._initial = initial
        self.commands = (
            None if commands is None else {n: CommandSpec(n, s) for n, s in commands.items()}
        )
        self.snapshots = snapshots
        self.state_type = domain
        self.state_version = state_version
        self._state_decoder = msgspec.json.Decoder(
            state_type if state_type is not None else type(initial())
        )

    def initial(self, aggregate_id: str) -> Any:
        return self._initial()

    def evolve(self, state: Any, event: Any) -> Any:
        return self._evolve(state, event)

    def decide(self, command: Command, state: Any) -> list[Any]:
        return _events_of(self._decide(command, state))

    def encode_state(self, state: Any) -> bytes:
        return _encoder.encode(state)

    def decode_state(self, snapshot: Snapshot) -> Any:
        return self._state_decoder.decode(snapshot.state)


# --- aggregate classes ------------------------------------------------------------------------

_COMMAND_MARK = "__chronik_command__"
_APPLY_MARK = "__chronik_apply__"


def command(name: str | None = None) -> Callable[[F], F]:
    """Mark an aggregate method as the handler of command ``name``.

    The payload schema is the annotation of the method's first parameter (a Struct or
    dataclass; otherwise the payload is a dict), and ``name`` defaults to that class's name.
    A second parameter, if declared, receives the whole ``Command``.
    """

    def mark(fn: F) -> F:
        setattr(fn, _COMMAND_MARK, name or "")
        return fn

    return mark


def apply(fn: F) -> F:
    """Mark an aggregate method as the applier of the event class its parameter names."""
    setattr(fn, _APPLY_MARK, True)
    return fn


class Aggregate:
    """Base class of aggregate-style business logic.

    Subclasses set ``domain``, declare their state as annotated class attributes with defaults
    (these are what snapshots store), mark command methods with ``@chronik.command()`` and apply
    methods with ``@chronik.apply``. A command method checks invariants (``self.require`` or
    ``self.reject`` refuse with a reason) and calls ``self.emit(event)``, which applies the event
    at once.
    """

    domain: ClassVar[str]
    snapshots: ClassVar[Snapshots | None] = None
    state_version: ClassVar[int] = 1
    _command_specs: ClassVar[dict[str, tuple[CommandSpec, str, bool]]]
    _appliers: ClassVar[dict[type[Any], str]]
    _state_fields: ClassVar[dict[str, Any]]
    _state_struct: ClassVar[type[msgspec.Struct]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands: dict[str, tuple[CommandSpec, str, bool]] = {}
        appliers: dict[type[Any], str] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                if not callable(fn):
                    continue
                if hasattr(fn, _COMMAND_MARK):
                    spec, wants_command = _command_spec(cls, fn, getattr(fn, _COMMAND_MARK))
                    commands[spec.name] = (spec, attr, wants_command)
                if getattr(fn, _APPLY_MARK, False):
                    appliers[_applied_class(cls, fn)] = attr
        cls._command_specs = commands
        cls._appliers = appliers
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {}
        for name, tp in hints.items():
            if name.startswith("_") or name in ("id", "version", "domain"):
                continue
            if typing.get_origin(tp) is ClassVar or tp is ClassVar:
                continue
            if name not in vars(cls) and not any(name in vars(b) for b in cls.__mro__[1:]):
                raise ConfigurationError(f"{cls.__name__}.{name} needs a default value")
            fields[name] = tp
        cls._state_fields = fields
        cls._state_struct = msgspec.defstruct(
            f"{cls.__name__}State", [(n, t, _default(getattr(cls, n))) for n, t in fields.items()]
        )

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self._pending: list[Any] = []
        for name in self._state_fields:
            setattr(self, name, copy.deepcopy(getattr(type(self), name)))

    def emit(self, event: Any) -> None:
        """Record a new event and apply it to this aggregate now.

        A raw ``chronik.EventData`` of a type the registry does not know is stored as it is;
        an ``@apply`` method taking a ``RecordedEvent`` gets it once the command is decided
        (and on every load), as the registry is the allowlist of classes events decode into.
        """
        self._apply(event)
        self._pending.append(event)

    def schedule(
        self, name: str, after: float, command: str, payload: dict[str, Any] | None = None
    ) -> None:
        """Send this aggregate ``command`` ``after`` seconds from now, unless cancelled first
        (replaces a deadline of the same name; needs the chronik_deadlines projection and a
        deadline scheduler: ``chronik serve`` runs them, an app ``Chronik(run_deadlines=True)``)."""
        from chronik.deadline_events import schedule

        self.emit(schedule(name, after, command, payload))

    def cancel_deadline(self, name: str) -> None:
        """Cancel this aggregate's deadline ``name``."""
        from chronik.deadline_events import cancel_deadline

        self.emit(cancel_deadline(name))

    def reject(self, reason: str) -> NoReturn:
        """Refuse the command being handled."""
        raise CommandRejected(reason)

    def require(self, condition: object, reason: str) -> None:
        """Refuse the command with ``reason`` unless ``condition`` holds."""
        if not condition:
            raise CommandRejected(reason)

    def _apply(self, event: Any) -> None:
        name = self._appliers.get(type(event))
        if name is not None:
            getattr(self, name)(event)

    def __repr__(self) -> str:
        state = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._state_fields)
        return f"{type(self).__name__}(id={self.id!r}, {state})"


def _default(value: Any) -> Any:
    if isinstance(value, list | dict | set | bytearray):
        return msgspec.field(default_factory=lambda: copy.deepcopy(value))
    return value


def _first_param(fn: Callable[..., Any]) -> tuple[str, Any, int]:
    params = list(inspect.signature(fn).parameters.values())[1:]  # after self
    if not params:
        raise ConfigurationError(f"{fn.__qualname__} needs a parameter")
    hints = typing.get_type_hints(fn)
    return params[0].name, hints.get(params[0].name), len(params)


def _command_spec(cls: type[Any], fn: Callable[..., Any], name: str) -> tuple[CommandSpec, bool]:
    _, schema, arity = _first_param(fn)
    if arity > 2:
        raise ConfigurationError(f"{fn.__qualname__}: expected (self, payload[, command])")
    if not _is_schema(schema):
        schema = None
    name = name or (schema.__name__ if schema is not None else "")
    if not name:
        raise ConfigurationError(
            f"{fn.__qualname__}: name the command (@command('Name')) or annotate its payload"
        )
    return CommandSpec(name, schema), arity == 2


def _applied_class(cls: type[Any], fn: Callable[..., Any]) -> type[Any]:
    _, event_cls, _ = _first_param(fn)
    if not isinstance(event_cls, type):
        raise ConfigurationError(f"{fn.__qualname__}: annotate the event parameter with its class")
    return event_cls


class AggregateModel(DomainModel):
    """The DomainModel of an Aggregate subclass."""

    def __init__(self, cls: type[Aggregate]) -> None:
        if not isinstance(cls, type) or not issubclass(cls, Aggregate):
            raise ConfigurationError(f"{cls!r} is not an Aggregate subclass")
        domain = getattr(cls, "domain", None)
        if not isinstance(domain, str):
            raise ConfigurationError(f"{cls.__name__} needs a `domain = '...'` class attribute")
        _check_domain(domain)
        self.cls = cls
        self.domain = domain
        self.commands = {n: spec for n, (spec, _, _) in cls._command_specs.items()}
        self.snapshots = cls.snapshots
        self.state_type = cls.__name__
        self.state_version = cls.state_version
        self._state_decoder = msgspec.json.Decoder(cls._state_struct)

    def initial(self, aggregate_id: str) -> Aggregate:
        return self.cls(aggregate_id)

    def evolve(self, state: Any, event: Any) -> Any:
        state._apply(event)
        return state

    def decide(self, command: Command, state: Any) -> list[Any]:
        _, method, wants_command = self.cls._command_specs[command.type]
        state._pending = []
        handler = getattr(state, method)
        if wants_command:
            handler(command.payload, command)
        else:
            handler(command.payload)
        events: list[Any] = state._pending
        state._pending = []
        state._emitted = {id(e) for e in events}  # what emit applied (or could not: raw data)
        return events

    def settle(self, state: Any, events: list[Any]) -> Any:
        """Apply what emit could not: a raw EventData reaches the state here, typed by the bus
        (as its class, or as a RecordedEvent when its type is not registered)."""
        emitted: set[int] = getattr(state, "_emitted", set())
        state._emitted = set()
        for event in events:
            if id(event) not in emitted:
                state._apply(event)
        return state

    def encode_state(self, state: Any) -> bytes:
        fields = {n: getattr(state, n) for n in self.cls._state_fields}
        return _encoder.encode(self.cls._state_struct(**fields))

    def decode_state(self, snapshot: Snapshot) -> Any:
        decoded = self._state_decoder.decode(snapshot.state)
        state = self.cls(snapshot.stream.aggregate_id)
        for name in self.cls._state_fields:
            setattr(state, name, getattr(decoded, name))
        return state


def _check_domain(domain: str) -> None:
    if not isinstance(domain, str) or not _DOMAIN_RE.fullmatch(domain):
        raise ConfigurationError(f"invalid domain {domain!r}: expected [a-z][a-z0-9_.-]{{0,63}}")
