"""Business logic in two styles: aggregate classes and decider functions, behind one model.

A *decider* is three plain functions (``chronik.decider``). An *aggregate* is a class whose
command methods check invariants and ``emit`` typed events, and whose apply methods change its
fields (this module). Both become a ``DomainModel`` (``chronik.domain_model``): what the command
bus, the repository and the test kit use, so a command runs the same code everywhere. This
module re-exports ``CommandSpec``, ``Decider``, ``DomainModel`` and ``Snapshots``.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Final, NoReturn, TypeVar

import msgspec

from chronik.deadline_events import cancel_deadline, schedule
from chronik.decider import Decider
from chronik.domain_model import CommandSpec, DomainModel, Snapshots, check_domain, is_schema
from chronik.errors import CommandRejected, ConfigurationError
from chronik.messages import Command, Snapshot

__all__ = [
    "Aggregate",
    "AggregateModel",
    "CommandSpec",
    "Decider",
    "DomainModel",
    "Snapshots",
    "apply",
    "command",
]

F = TypeVar("F", bound=Callable[..., Any])
_encoder = msgspec.json.Encoder()


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
    (these are what snapshots store; a mutable default is written
    ``items: list[Item] = msgspec.field(default_factory=list)``, or as a literal ``[]``, which
    is copied for each instance), mark command methods with ``@chronik.command()`` and apply
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
            declared = name in vars(cls) or any(name in vars(b) for b in cls.__mro__[1:])
            if not declared or _required(getattr(cls, name)):
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
            setattr(self, name, _fresh(getattr(type(self), name)))

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
        self.emit(schedule(name, after, command, payload))

    def cancel_deadline(self, name: str) -> None:
        """Cancel this aggregate's deadline ``name``."""
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


_FIELD: Final = type(msgspec.field())


def _required(value: Any) -> bool:
    """Whether a state field's class value is a ``msgspec.field()`` with no default."""
    return (
        isinstance(value, _FIELD)
        and value.default is msgspec.NODEFAULT
        and value.default_factory is msgspec.NODEFAULT
    )


def _default(value: Any) -> Any:
    """A state field's default for the snapshot struct (a mutable one as a factory)."""
    if isinstance(value, _FIELD):
        return value
    if isinstance(value, list | dict | set | bytearray):
        return msgspec.field(default_factory=lambda: copy.deepcopy(value))
    return value


def _fresh(value: Any) -> Any:
    """A new instance's value of a state field: its factory's, or a copy of its default."""
    if isinstance(value, _FIELD):
        if value.default_factory is not msgspec.NODEFAULT:
            return value.default_factory()
        return copy.deepcopy(value.default)
    return copy.deepcopy(value)


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
    if not is_schema(schema):
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
        check_domain(domain)
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
