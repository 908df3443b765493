"""The event type registry (an allowlist), msgspec JSON encoding and upcaster chains.

The value rule (``check_json_value``, ``decode_json``, ``encode_json``: int64, finite numbers,
depth, no lone surrogates) lives in ``chronik.values`` and is re-exported here.

A registry maps type names such as ``customer.created`` to user classes (dataclasses or msgspec
Structs) at a current schema version. Stored events of older versions are brought to the current
shape on read by upcasters keyed by (type, from_version), each turning a payload dict of one
version into the next. A name that is not registered is an error (UnknownEventType), never an
import.

Personal fields (``personal={"email": "customer_id"}``, see ``chronik.personal``) are sealed
per subject by ``to_event_data`` and opened by ``decode`` once a ``KeyRing`` is attached with
``use_keys``; the ring answers from its cache, so the async paths load keys first
(``load_keys``, ``adecode``; the command bus and the repository do it themselves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from chronik.errors import (
    ConfigurationError,
    DeserializationError,
    InvalidEventType,
    UndecodableEvent,
    UnknownEventType,
    UpcastError,
)
from chronik.messages import JSON, REDACTED, TYPE_NAME_RE, EventData, Metadata, RecordedEvent
from chronik.personal.at_rest import SEALED, AtRest
from chronik.personal.fields import (
    PersonalSpec,
    envelope_subjects,
    open_payload,
    personal_spec,
    seal_payload,
)
from chronik.personal.keyring import KeyRing
from chronik.personal.redacted import redacted_of
from chronik.personal.sealing import open_event, seal_event
from chronik.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    check_json_value,
    decode_json,
    encode_json,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "EventRegistry",
    "Upcaster",
    "check_json_value",
    "decode_json",
    "encode_json",
]

T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_encoder = msgspec.json.Encoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


class _Entry(msgspec.Struct, frozen=True):
    name: str
    cls: type[Any]
    version: int
    decoder: msgspec.json.Decoder[Any]
    personal: PersonalSpec | None = None


class EventRegistry:
    """Which event classes exist, under which names and versions, and how old versions upcast."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type[Any], _Entry] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, tuple[int, Callable[[bytes], Any]]] | None = None
        self.keys: KeyRing | None = None
        self._personal: frozenset[str] = frozenset()
        #: seal whole payloads at rest (``chronik.personal.at_rest.AtRest``; None: plain JSON)
        self.at_rest: AtRest | None = None

    # --- registration -------------------------------------------------------------------------

    def register(
        self,
        cls: type[T],
        name: str | None = None,
        *,
        version: int = 1,
        aliases: Sequence[str] = (),
        personal: Mapping[str, str] | None = None,
    ) -> type[T]:
        """Allow ``cls`` (a dataclass or msgspec Struct) under ``name`` at schema ``version``.

        ``aliases`` are former names of the type: stored events under them still decode into
        ``cls`` (their versions continue the same upcaster chain); new events use ``name``.
        ``personal`` maps personal fields to the field naming their subject (checked now).
        """
        if not isinstance(cls, type) or not (
            issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)
        ):
            raise ConfigurationError(f"{cls!r} is not a dataclass or msgspec Struct")
        name = name or cls.__name__
        if not TYPE_NAME_RE.fullmatch(name):
            raise InvalidEventType(f"invalid event type name {name!r}", field="type")
        if type(version) is not int or version < 1:
            raise ConfigurationError(f"schema version of {name} must be an int >= 1")
        existing = self._by_name.get(name)
        if existing is not None and existing.cls is not cls:
            raise ConfigurationError(f"{name!r} is already registered to {existing.cls!r}")
        if cls in self._by_class and self._by_class[cls].name != name:
            raise ConfigurationError(f"{cls!r} is already registered as {self._by_class[cls].name}")
        for alias in aliases:
            if not TYPE_NAME_RE.fullmatch(alias):
                raise InvalidEventType(f"invalid event type alias {alias!r}", field="type")
            taken = self._by_name.get(alias)
            if taken is not None and taken.cls is not cls:
                raise ConfigurationError(f"{alias!r} is already registered to {taken.cls!r}")
        spec = None if personal is None else personal_spec(cls, personal, name)
        entry = _Entry(name, cls, version, msgspec.json.Decoder(cls), spec)
        for key in (name, *aliases):
            self._by_name[key] = entry
        self._by_class[cls] = entry
        self._current = None
        self._personal = frozenset(k for k, e in self._by_name.items() if e.personal is not None)
        return cls

    def event(
        self,
        name: str | None = None,
        *,
        version: int = 1,
        aliases: Sequence[str] = (),
        personal: Mapping[str, str] | None = None,
    ) -> Callable[[type[T]], type[T]]:
        """Class decorator form of ``register``."""

        def decorate(cls: type[T]) -> type[T]:
            return self.register(cls, name, version=version, aliases=aliases, personal=personal)

        return decorate

    def add_upcaster(self, type_name: str, from_version: int, upcaster: Upcaster) -> None:
        """Turn payloads of ``type_name`` at ``from_version`` into ``from_version + 1``."""
        key = (type_name, from_version)
        if key in self._upcasters:
            raise ConfigurationError(f"an upcaster for {type_name} v{from_version} exists")
        self._upcasters[key] = upcaster

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of ``add_upcaster``."""

        def decorate(fn: Upcaster) -> Upcaster:
            self.add_upcaster(type_name, from_version, fn)
            return fn

        return decorate

    # --- lookup -------------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        """The registered type names (current names, not aliases), sorted."""
        return sorted({e.name for e in self._by_name.values()})

    def aliases(self, name: str) -> list[str]:
        """The former names of the type registered as ``name``, sorted (read-only)."""
        entry = self._entry(name)
        return sorted(k for k, e in self._by_name.items() if e is entry and k != entry.name)

    def canonical(self, name: str) -> str:
        """The current name of a type registered as ``name`` (itself or an alias)."""
        return self._entry(name).name

    def class_for(self, name: str) -> type[Any]:
        """The class registered as ``name``; UnknownEventType if none."""
        return self._entry(name).cls

    def name_of(self, event: object) -> str:
        """The type name of an event instance or class."""
        cls = event if isinstance(event, type) else type(event)
        entry = self._by_class.get(cls)
        if entry is None:
            raise UnknownEventType(getattr(cls, "__qualname__", repr(cls)))
        return entry.name

    def version_of(self, name: str) -> int:
        """The current schema version of ``name``."""
        return self._entry(name).version

    def upcasters(self, name: str) -> dict[int, Upcaster]:
        """The upcasters of the type registered as ``name``, by the version each reads."""
        entry = self._entry(name)
        return {v: fn for (n, v), fn in sorted(self._upcasters.items()) if n == entry.name}

    def _entry(self, name: str) -> _Entry:
        entry = self._by_name.get(name)
        if entry is None:
            raise UnknownEventType(name)
        return entry

    # --- encoding -----------------------------------------------------------------------------

    def to_event_data(
        self,
        event: object,
        metadata: Metadata | Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> EventData:
        """An EventData for a registered event instance, at its current schema version."""
        entry = self._by_class.get(type(event))
        if entry is None:
            raise UnknownEventType(type(event).__qualname__)
        payload: Any = event
        if (spec := entry.personal) is not None and self.keys is not None:
            payload = seal_payload(spec, entry.name, msgspec.to_builtins(event), self.keys)
        if self.at_rest is not None:  # whole payloads sealed at rest (chronik.personal.at_rest)
            return seal_event(self.at_rest, entry.name, entry.version, payload, metadata, event_id)
        if event_id is None:
            return EventData(entry.name, payload, metadata, schema_version=entry.version)
        return EventData(entry.name, payload, metadata, event_id, entry.version)

    # --- decoding and upcasting ---------------------------------------------------------------

    def upcast_payload(
        self, name: str, version: int, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Run the upcaster chain from ``version`` to the current one; returns both."""
        entry = self._entry(name)
        name, current = entry.name, entry.version
        if version > current:
            raise UpcastError(
                f"{name} v{version} is newer than the registered v{current}: upgrade the code"
            )
        while version < current:
            step = self._upcasters.get((name, version))
            if step is None:
                raise UpcastError(f"no upcaster from {name} v{version} to v{version + 1}")
            try:
                payload = step(payload)
            except Exception as exc:
                raise UpcastError(f"upcaster {name} v{version} failed: {exc!r}") from exc
            if not isinstance(payload, dict):
                raise UpcastError(f"upcaster {name} v{version} returned {type(payload).__name__}")
            version += 1
        return version, payload

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        """The event with its payload in the current shape (the same object if already current)."""
        entry = self._entry(event.type)
        if event.content_type == REDACTED:  # no upcaster ever sees a redaction marker
            return event
        if event.content_type == SEALED:
            return self.upcast(open_event(event, self.at_rest))
        if event.schema_version == entry.version:
            if event.type == entry.name:
                return event
            return msgspec.structs.replace(event, type=entry.name)
        version, payload = self.upcast_payload(
            event.type, event.schema_version, self._decode_dict(event)
        )
        return msgspec.structs.replace(
            event, type=entry.name, payload=_encoder.encode(payload), schema_version=version
        )

    def current_decoders(self) -> dict[str, tuple[int, Callable[[bytes], Any]]]:
        """Type name (and alias) -> (current schema version, JSON decoder of its class): the
        fast path of ``decode`` for a JSON payload stored at the current version. Read-only;
        anything else, or a payload that fails to decode, goes through ``decode``."""
        if self._current is None:
            self._current = {
                k: (e.version, e.decoder.decode if e.personal is None else self._opener(k, e))
                for k, e in self._by_name.items()
            }
        return self._current

    def decode(self, event: RecordedEvent) -> Any:
        """The event's payload as an instance of its registered class, upcast as needed.

        UndecodableEvent (naming the stream, sequence, id, type and version, and the repair) when
        the stored payload does not fit: a stored event is never changed, so code must adapt.
        """
        entry = self._entry(event.type)
        if event.content_type != JSON:
            if event.content_type == REDACTED:
                return redacted_of(event)
            if event.content_type == SEALED:
                return self.decode(open_event(event, self.at_rest))
            raise DeserializationError(
                f"{event.type} {event.event_id} has content type {event.content_type}; "
                "decode it yourself"
            )
        try:
            if event.schema_version == entry.version and entry.personal is None:
                return entry.decoder.decode(event.payload)
            payload = self._decode_dict(event)
            if self.keys is not None:
                placeholders = {} if entry.personal is None else entry.personal.placeholders
                payload = open_payload(event.type, payload, self.keys, placeholders)
            _, payload = self.upcast_payload(event.type, event.schema_version, payload)
            return msgspec.convert(payload, entry.cls)
        except msgspec.ValidationError as exc:
            reason = f"the payload does not fit {entry.cls.__qualname__}: {exc}"
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = f"the payload is not readable JSON: {exc}"
        except (UpcastError, DeserializationError) as exc:
            reason = str(exc)
        name, stored, current = entry.name, event.schema_version, entry.version
        if stored > current:
            repair = f"deploy the code that registers {name} v{stored}"
        elif stored < current:
            repair = f"register (or fix) the upcaster for {name} v{stored}"
        else:
            repair = (
                f"register {name} at version {current + 1} with an upcaster for {name} "
                f"v{current} that turns such payloads into the new shape"
            )
        raise UndecodableEvent(
            stream=str(event.stream),
            sequence=event.sequence,
            event_id=event.event_id,
            event_type=event.type,
            schema_version=stored,
            reason=reason,
            repair=repair,
        )

    def _decode_dict(self, event: RecordedEvent) -> dict[str, Any]:
        try:
            return _dict_decoder.decode(event.payload)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DeserializationError(
                f"{event.type} {event.event_id} is not a JSON object: {exc}"
            ) from exc

    # --- personal data ------------------------------------------------------------------------

    def use_keys(self, keys: KeyRing | None) -> None:
        """Seal and open personal fields with ``keys`` (None: store and read them as they are)."""
        if keys is not None and not isinstance(keys, KeyRing):
            raise ConfigurationError(f"expected a chronik.personal.KeyRing, got {keys!r}")
        self.keys = keys
        self._current = None

    def personal_types(self) -> frozenset[str]:
        """The type names (and aliases) with personal fields."""
        return self._personal

    async def load_keys(self, events: Sequence[Any]) -> None:
        """Load (creating as needed) the keys ``to_event_data`` needs for these event instances,
        and the keys ``decode`` needs for these RecordedEvents. Nothing without a key ring."""
        if self.keys is None:
            return
        create: list[str] = []
        read: list[str] = []
        for event in events:
            if isinstance(event, RecordedEvent):
                if event.content_type == SEALED and event.type in self._personal:
                    event = open_event(event, self.at_rest)
                if event.type in self._by_name and event.content_type == JSON:
                    read += envelope_subjects(self._decode_dict(event))
                continue
            entry = self._by_class.get(type(event))
            if entry is not None and entry.personal is not None:
                create += entry.personal.subjects_of(msgspec.to_builtins(event))
        await self.keys.load(read)
        await self.keys.load(create, create=True)

    async def adecode(self, event: RecordedEvent) -> Any:
        """``decode``, loading the subject keys it needs first (for async handlers)."""
        if self.keys is not None:
            await self.load_keys([event])
        return self.decode(event)

    def _opener(self, name: str, entry: _Entry) -> Callable[[bytes], Any]:
        """The fast-path decoder of a personal type: open the envelopes, then convert."""
        placeholders = {} if entry.personal is None else entry.personal.placeholders
        cls, keys = entry.cls, self.keys

        def decode(payload: bytes) -> Any:
            data = _dict_decoder.decode(payload)
            if keys is not None:
                data = open_payload(name, data, keys, placeholders)
            return msgspec.convert(data, cls)

        return decode
