"""Edge checks that gRPC and HTTP share, with no transport of their own.

- ``check_raw_events`` validates raw appended events (EventStore.Append, AppendTagged,
  ``POST /v1/dcb/append``) against the registered schemas, and refuses types that no model
  knows on domains served by models (they would poison the stream).
- ``query_of`` / ``condition_of`` build a DCB ``Query`` / ``AppendCondition`` from what came
  over the wire, a refusal naming the exact field (``query.items[0].tags``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from chronik.codec import decode_json
from chronik.dcb import AppendCondition, Query, QueryItem, check_tags
from chronik.errors import DeserializationError, UpcastError, ValidationError
from chronik.messages import JSON, EventData, Position

if TYPE_CHECKING:
    from chronik.app import Chronik

__all__ = ["check_raw_events", "condition_of", "query_of"]


def check_raw_events(app: Chronik, domain: str, events: Sequence[EventData]) -> None:
    """Refuse events that the domain's business logic could not load later.

    A registered type must be JSON that decodes into its class at its schema version (upcast
    first when older); a type the registry does not know is refused on a domain served by a
    model (in-process or remote) and allowed on domains that only the event store serves.
    Tags are checked here too, so a refusal names the event (``events[1].tags``).
    """
    registry = app.registry
    modelled = domain in app.bus.domains
    for i, event in enumerate(events):
        where = f"events[{i}]"
        if event.tags:
            check_tags(event.tags, f"{where}.tags")
        if event.content_type == JSON and isinstance(event.payload, bytes):
            decode_json(event.payload, f"{where}.payload")
        if event.type not in registry:
            if modelled:
                raise ValidationError(
                    f"{where}.type: {event.type!r} is not a registered event type, and domain "
                    f"{domain!r} is served by a model that could not load it "
                    f"(registered: {', '.join(registry.names()) or 'none'})",
                    field=f"{where}.type",
                )
            continue
        if event.content_type != JSON:
            raise ValidationError(
                f"{where}.content_type: {event.type} is a registered type; its payload must "
                "be JSON",
                field=f"{where}.content_type",
            )
        _check_schema(app, event, where)


def _check_schema(app: Chronik, event: EventData, where: str) -> None:
    registry = app.registry
    cls = registry.class_for(event.type)
    name = registry.canonical(event.type)
    current = registry.version_of(event.type)
    try:
        if event.schema_version == current:
            msgspec.json.decode(bytes(event.payload), type=cls)
            return
        payload = msgspec.json.decode(bytes(event.payload))
        if not isinstance(payload, dict):
            raise msgspec.ValidationError("expected a JSON object")
        _, upcast = registry.upcast_payload(event.type, event.schema_version, payload)
        msgspec.convert(upcast, cls)
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"{where}.payload does not fit {name} v{event.schema_version} "
            f"({cls.__qualname__}): {exc}",
            field=f"{where}.payload",
        ) from None
    except (UpcastError, DeserializationError) as exc:
        raise ValidationError(
            f"{where}.schema_version: {exc}", field=f"{where}.schema_version"
        ) from None


def query_of(items: Any, field: str = "query") -> Query:
    """The Query of ``items`` (a list of ``(types, tags)`` pairs, each a list of strings);
    ValidationError naming the field below ``field`` that is out of shape."""
    if not isinstance(items, list | tuple) or not items:
        raise ValidationError(
            f"{field}.items: a query needs at least one item (an item with no types and no "
            "tags matches every event)",
            field=f"{field}.items",
        )
    out = []
    for i, (types, tags) in enumerate(items):
        try:
            out.append(QueryItem(types or (), tags or ()))
        except ValidationError as exc:
            name = f"{field}.items[{i}].{exc.field or 'types'}"
            raise ValidationError(f"{name}: {exc}", field=name) from None
    try:
        return Query(out)
    except ValidationError as exc:
        raise ValidationError(f"{field}.items: {exc}", field=f"{field}.items") from None


def condition_of(query: Query, after: str | None, field: str = "condition") -> AppendCondition:
    """The AppendCondition of ``query`` and a position string (None or empty: no position)."""
    position = Position.parse(after, f"{field}.after") if after else None
    return AppendCondition(query, position)
