"""The schema catalog: each domain's command types and every registered event type, with the
JSON Schema of their payloads, so generic clients and the admin UI can build forms.

The schemas come from what the business logic already declares: the payload class of each
command (a msgspec Struct or dataclass: ``Decider(commands=...)``, ``@chronik.command()``) and
the class of each registered event type at its current schema version (older versions are
upcast on read and have no schema of their own). A domain served by remote business logic, or a
decider without ``commands``, accepts any command type: it is listed with ``open`` set, no
command types, and a note saying so. Served as ``GET /v1/schemas``, in ``/openapi.json`` (the
body of ``POST /v1/commands``) and as the gRPC ``Catalog.Describe`` call.

Per domain it also lists the event types its business logic emits: the registered event
classes and type names its code refers to (an aggregate's methods, a decider's ``decide`` and
``evolve``: annotations, ``case Created(...)`` patterns, constructor calls, ``EventData`` type
names), found by reading the functions, not by running them; a remote domain lists none. Each
event type lists the domains that emit it and every schema version from 1 to the current one,
each with the upcaster that reads it (``readable`` is false where the chain to the current
version has a gap: stored events of that version fail to decode).
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from chronik.app import Chronik
from chronik.codec import EventRegistry
from chronik.errors import UnknownEventType

__all__ = [
    "ANY_OBJECT",
    "CATALOG_SCHEMA",
    "COMPONENT_PREFIX",
    "Catalog",
    "CommandSchema",
    "DomainSchema",
    "EventSchema",
    "EventVersion",
    "catalog_of",
    "command_union",
    "emitted_events",
    "json_schema",
    "payload_components",
]

log = logging.getLogger("chronik.server")
ANY_OBJECT: Final[dict[str, Any]] = {"type": "object"}
COMPONENT_PREFIX: Final = "payload."  # OpenAPI component names of payload classes
_Class: TypeAlias = type[Any]
REMOTE_NOTE: Final = "business logic served remotely: no local schema, any command type"
OPEN_NOTE: Final = "the decider declares no commands: any command type, any JSON object"

_ANY_SCHEMA = {"type": "object", "description": "a JSON Schema"}
CATALOG_SCHEMA: Final[dict[str, Any]] = {  # GET /v1/schemas, in OpenAPI
    "type": "object",
    "required": ["domains", "events"],
    "properties": {
        "domains": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "domain": {"type": "string"},
                    "logic": {"type": "string", "enum": ["in-process", "remote"]},
                    "open": {"type": "boolean", "description": "any command type (no schema)"},
                    "note": {"type": "string"},
                    "events": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "the registered event types its business logic emits",
                    },
                    "commands": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"type": {"type": "string"}, "schema": _ANY_SCHEMA},
                        },
                    },
                },
            },
        },
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "schema_version": {"type": "integer"},
                    "aliases": {"type": "array", "items": {"type": "string"}},
                    "schema": _ANY_SCHEMA,
                    "domains": {"type": "array", "items": {"type": "string"}},
                    "versions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "version": {"type": "integer"},
                                "current": {"type": "boolean"},
                                "upcaster": {"type": ["string", "null"]},
                                "readable": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}


class CommandSchema(msgspec.Struct, frozen=True):
    """A command type of a domain and the JSON Schema of its payload."""

    type: str
    schema: dict[str, Any]
    cls: _Class | None = None  # the payload class (None: any JSON object)


class DomainSchema(msgspec.Struct, frozen=True):
    """One domain: where its logic runs, its command types (none when ``open``), a note."""

    domain: str
    logic: Literal["in-process", "remote"]
    open: bool
    commands: tuple[CommandSchema, ...]
    note: str = ""
    events: tuple[str, ...] = ()  # the registered event types its logic emits


class EventVersion(msgspec.Struct, frozen=True):
    """One schema version of an event type: the upcaster to the next (None: the current one,
    or a gap) and whether stored events of this version decode (the chain is complete)."""

    version: int
    current: bool
    upcaster: str | None
    readable: bool


class EventSchema(msgspec.Struct, frozen=True):
    """A registered event type at its current schema version, and the JSON Schema of it."""

    type: str
    schema_version: int
    aliases: tuple[str, ...]
    schema: dict[str, Any]
    cls: _Class
    domains: tuple[str, ...] = ()  # the domains whose logic emits it
    versions: tuple[EventVersion, ...] = ()  # 1 .. schema_version


class Catalog(msgspec.Struct, frozen=True):
    """Every domain and every registered event type of one app."""

    domains: tuple[DomainSchema, ...]
    events: tuple[EventSchema, ...]

    def to_json(self) -> dict[str, Any]:
        """The catalog as ``GET /v1/schemas`` answers it (the classes left out)."""
        return {
            "domains": [
                {
                    "domain": d.domain,
                    "logic": d.logic,
                    "open": d.open,
                    "note": d.note,
                    "commands": [{"type": c.type, "schema": c.schema} for c in d.commands],
                    "events": list(d.events),
                }
                for d in self.domains
            ],
            "events": [
                {
                    "type": e.type,
                    "schema_version": e.schema_version,
                    "aliases": list(e.aliases),
                    "schema": e.schema,
                    "domains": list(e.domains),
                    "versions": [msgspec.to_builtins(v) for v in e.versions],
                }
                for e in self.events
            ],
        }


def json_schema(cls: type[Any] | None) -> dict[str, Any]:
    """The self-contained JSON Schema of a payload class (``$defs`` inside); a class msgspec
    cannot describe gets a schema accepting any object, with a description saying why."""
    if cls is None:
        return dict(ANY_OBJECT)
    try:
        return msgspec.json.schema(cls)
    except (TypeError, ValueError) as exc:
        log.warning("no JSON Schema for %s: %s", cls.__qualname__, exc)
        first = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
        return {**ANY_OBJECT, "description": f"no JSON Schema for {cls.__qualname__}: {first}"}


def _is_remote(model: object) -> bool:
    remote = sys.modules.get("chronik.server.remote")  # no RemoteModel exists unless imported
    return remote is not None and isinstance(model, remote.RemoteModel)


def _functions(model: object) -> Iterator[types.FunctionType]:
    """The plain functions of a model: those it holds (a decider's decide and evolve) and the
    methods of its class and of a class it holds (an aggregate's); chronik's own left out."""
    held = list(vars(model).values())
    for value in held:
        fn = inspect.unwrap(getattr(value, "__func__", value)) if callable(value) else None
        if isinstance(fn, types.FunctionType) and not fn.__module__.startswith("chronik."):
            yield fn
    for cls in (type(model), *(v for v in held if isinstance(v, type))):
        for klass in cls.__mro__:
            if not klass.__module__.startswith(("chronik.", "builtins")):
                for attr in vars(klass).values():
                    if isinstance(fn := getattr(attr, "__func__", attr), types.FunctionType):
                        yield fn


def _referred(fn: types.FunctionType) -> Iterator[object]:
    """What a function refers to: its annotations and the globals, attributes and string
    constants of its code (nested code included)."""
    try:
        yield from typing.get_type_hints(fn).values()
    except Exception:  # any unresolvable annotation: the code still tells
        log.debug("annotations of %s not resolved", fn.__qualname__)
    namespace = dict(fn.__globals__)
    for cell, name in zip(fn.__closure__ or (), fn.__code__.co_freevars, strict=True):
        try:
            namespace.setdefault(name, cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        for name in code.co_names:
            value = namespace.get(name)
            yield value
            if isinstance(value, types.ModuleType) and not value.__name__.startswith("chronik"):
                yield from (vars(value).get(n) for n in code.co_names)  # no lazy __getattr__
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                codes.append(const)
            else:
                yield const


def _flatten(value: object) -> Iterator[object]:
    yield value
    for arg in typing.get_args(value):
        yield from _flatten(arg)


def emitted_events(model: object, registry: EventRegistry) -> tuple[str, ...]:
    """The registered event types a model's code refers to (classes or type names), sorted."""
    found: set[str] = set()
    for fn in _functions(model):
        for ref in _referred(fn):
            for item in _flatten(ref):
                if isinstance(item, str):
                    if item in registry:
                        found.add(registry.canonical(item))
                elif isinstance(item, type):
                    try:
                        found.add(registry.name_of(item))
                    except UnknownEventType:  # not a registered event class
                        continue
    return tuple(sorted(found))


def _versions(registry: EventRegistry, name: str) -> tuple[EventVersion, ...]:
    current, steps = registry.version_of(name), registry.upcasters(name)
    out: list[EventVersion] = []
    readable = True
    for version in range(current, 0, -1):  # from the current one down: a gap cuts the chain
        step = steps.get(version) if version < current else None
        readable = version == current or (readable and step is not None)
        label = None if step is None else f"{step.__module__}.{step.__qualname__}"
        out.append(EventVersion(version, version == current, label, readable))
    return tuple(reversed(out))


def catalog_of(app: Chronik) -> Catalog:
    """The catalog of ``app``'s domains (sorted) and registered event types (sorted)."""
    domains: list[DomainSchema] = []
    registry = app.registry
    for name in app.bus.domains:
        model = app.bus.model(name)
        remote = _is_remote(model)
        logic: Literal["in-process", "remote"] = "remote" if remote else "in-process"
        emits = () if remote else emitted_events(model, registry)
        if model.commands is None:
            note = REMOTE_NOTE if remote else OPEN_NOTE
            domains.append(DomainSchema(name, logic, True, (), note, emits))
            continue
        commands = tuple(
            CommandSchema(t, json_schema(spec.schema), spec.schema)
            for t, spec in sorted(model.commands.items())
        )
        domains.append(DomainSchema(name, logic, False, commands, "", emits))
    events = tuple(
        EventSchema(
            t,
            registry.version_of(t),
            tuple(registry.aliases(t)),
            json_schema(registry.class_for(t)),
            registry.class_for(t),
            tuple(d.domain for d in domains if t in d.events),
            _versions(registry, t),
        )
        for t in registry.names()
    )
    return Catalog(tuple(domains), events)


def payload_components(
    classes: Sequence[type[Any]],
) -> tuple[dict[type[Any], dict[str, Any]], dict[str, dict[str, Any]]]:
    """OpenAPI references to the payload classes and the components they point at (named
    ``payload.<Class>``); a class msgspec cannot describe is left out (no reference)."""
    usable = []
    for cls in dict.fromkeys(classes):
        try:
            msgspec.json.schema(cls)
        except (TypeError, ValueError):
            continue
        usable.append(cls)
    template = "#/components/schemas/" + COMPONENT_PREFIX + "{name}"
    refs, components = msgspec.json.schema_components(usable, ref_template=template)
    return (
        dict(zip(usable, refs, strict=True)),
        {COMPONENT_PREFIX + name: schema for name, schema in components.items()},
    )


def _requires_payload(cls: type[Any]) -> bool:
    schema = json_schema(cls)
    ref = schema.get("$ref")
    top = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {}) if ref else schema
    return bool(top.get("required"))


def command_union(
    catalog: Catalog, command: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The body schema of ``POST /v1/commands`` for ``catalog``: a ``oneOf`` with one
    ``Command.<domain>.<type>`` component per command type (its payload schema inside) and one
    for the open domains; discriminated by ``type`` when every type name is unique. Returns the
    schema and the components to add. ``command`` is the generic Command schema."""
    closed = [(d, c) for d in catalog.domains for c in d.commands]
    open_domains = [d.domain for d in catalog.domains if d.open]
    if not closed and not open_domains:
        return {"$ref": "#/components/schemas/Command"}, {}
    classes: list[_Class] = [c.cls for _, c in closed if c.cls is not None]
    refs, components = payload_components(classes)
    variants: list[str] = []
    mapping: dict[str, str] = {}
    for domain, cmd in closed:
        name = "Command." + re.sub(r"[^A-Za-z0-9._-]", "_", f"{domain.domain}.{cmd.type}")
        while name in components:
            name += "_"
        ref = refs.get(cmd.cls) if cmd.cls is not None else None
        payload = ref if ref is not None else cmd.schema
        needs = cmd.cls is not None and ref is not None and _requires_payload(cmd.cls)
        components[name] = {
            **command,
            "title": f"{domain.domain} {cmd.type}",
            "required": [*command["required"], *(["payload"] if needs else [])],
            "properties": {
                **command["properties"],
                "domain": {"const": domain.domain},
                "type": {"const": cmd.type},
                "payload": payload,
            },
        }
        variants.append(name)
        mapping[cmd.type] = f"#/components/schemas/{name}"
    if open_domains:
        components["Command.open"] = {
            **command,
            "title": "a command of a domain with no local schema",
            "properties": {**command["properties"], "domain": {"enum": open_domains}},
        }
        variants.append("Command.open")
    union: dict[str, Any] = {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in variants]}
    if not open_domains and len(mapping) == len(closed):
        union["discriminator"] = {"propertyName": "type", "mapping": mapping}
    return union, components
