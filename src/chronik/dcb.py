"""Dynamic consistency boundaries (DCB): queries over tags and types, and append conditions.

A ``QueryItem`` matches an event whose type is one of the item's types (any type when it has
none) and that carries every one of the item's tags; a ``Query`` matches an event that matches
any of its items. An ``AppendCondition`` makes an append fail (``AppendConditionFailed``, nothing
written) when an event matching its query exists after a position: read with a query, decide,
then append with the condition built from the same query and the position of the last event
read, and no event that would have changed the decision can slip in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from chronik.errors import ValidationError
from chronik.messages import TYPE_NAME_RE, Position, RecordedEvent

__all__ = [
    "MAX_QUERY_ITEMS",
    "MAX_QUERY_TYPES",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "AppendCondition",
    "Query",
    "QueryItem",
    "check_tags",
]

MAX_QUERY_ITEMS: Final = 64
MAX_QUERY_TYPES: Final = 64
#: tags: at most MAX_TAGS per event, each 1..MAX_TAG_LENGTH printable characters without
#: spaces, such as ``course:c1``
MAX_TAGS: Final = 32
MAX_TAG_LENGTH: Final = 128
_TYPES_SEEN: set[str] = set()  # type names a query already had checked


def check_tags(tags: object, field: str = "tags") -> tuple[str, ...]:
    """``tags`` sorted without repeats, or ValidationError naming ``field`` when one is out of
    shape (1..128 printable characters, no space) or there are more than ``MAX_TAGS``."""
    if not tags:
        return ()
    if isinstance(tags, str | bytes) or not isinstance(tags, list | tuple | set | frozenset):
        raise ValidationError(f"{field} must be a list of strings, got {tags!r}", field=field)
    for tag in tags:
        if (
            not isinstance(tag, str)
            or not 0 < len(tag) <= MAX_TAG_LENGTH
            or not tag.isprintable()
            or " " in tag
        ):
            shown = repr(tag) if not isinstance(tag, str) or len(tag) <= 64 else "(too long)"
            raise ValidationError(
                f"invalid tag {shown}: expected 1..{MAX_TAG_LENGTH} printable characters "
                "without spaces, such as course:c1",
                field=field,
            )
    out = tuple(sorted(set(tags)))
    if len(out) > MAX_TAGS:
        raise ValidationError(f"{len(out)} tags, at most {MAX_TAGS} per event", field=field)
    return out


def _types(types: object) -> tuple[str, ...]:
    if not types:
        return ()
    if isinstance(types, str | bytes) or not isinstance(types, list | tuple | set | frozenset):
        raise ValidationError(f"types must be a list of strings, got {types!r}", field="types")
    for t in types:
        if type(t) is str and t in _TYPES_SEEN:
            continue
        if not isinstance(t, str) or not TYPE_NAME_RE.fullmatch(t):
            raise ValidationError(
                f"invalid event type {t!r} in a query: expected [A-Za-z][A-Za-z0-9_.:-]{{0,127}}",
                field="types",
            )
        if len(_TYPES_SEEN) < 4096:  # queries name a few types, again and again
            _TYPES_SEEN.add(t)
    out = tuple(sorted(set(types)))
    if len(out) > MAX_QUERY_TYPES:
        raise ValidationError(
            f"{len(out)} types, at most {MAX_QUERY_TYPES} per item", field="types"
        )
    return out


@dataclass(frozen=True, slots=True)
class QueryItem:
    """Events of one of ``types`` (any type when empty) carrying all of ``tags``."""

    types: Sequence[str] = ()
    tags: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _types(self.types))
        object.__setattr__(self, "tags", check_tags(self.tags))

    def matches(self, event: RecordedEvent) -> bool:
        """Whether ``event`` has one of the item's types and all of its tags."""
        if self.types and event.type not in self.types:
            return False
        tags = self.tags
        if not tags:
            return True
        have = event.tags
        return all(t in have for t in tags)

    def to_dict(self) -> dict[str, list[str]]:
        """The item as JSON-ready data (``{"types": [...], "tags": [...]}``)."""
        return {"types": list(self.types), "tags": list(self.tags)}

    def __str__(self) -> str:
        types = "|".join(self.types) or "*"
        return f"{types}[{','.join(self.tags)}]" if self.tags else types


@dataclass(frozen=True, slots=True)
class Query:
    """Events matching any of ``items``; ``Query.all()`` matches every event."""

    items: Sequence[QueryItem] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        items = self.items
        if isinstance(items, QueryItem) or not isinstance(items, list | tuple):
            raise ValidationError("items must be a list of QueryItem", field="items")
        if not items:
            raise ValidationError(
                "a query needs at least one item (Query.all() matches every event)", field="items"
            )
        if len(items) > MAX_QUERY_ITEMS:
            raise ValidationError(f"{len(items)} items, at most {MAX_QUERY_ITEMS}", field="items")
        if not all(isinstance(i, QueryItem) for i in items):
            raise ValidationError("items must be a list of QueryItem", field="items")
        object.__setattr__(self, "items", tuple(items))

    @classmethod
    def all(cls) -> Query:
        """The query every event matches."""
        return cls([QueryItem()])

    @classmethod
    def of(cls, types: Iterable[str] = (), tags: Iterable[str] = ()) -> Query:
        """A query of one item (``Query.of(tags=["course:c1"])``)."""
        return cls([QueryItem(list(types), list(tags))])

    @classmethod
    def from_dict(cls, data: Any, field_name: str = "query") -> Query:
        """The query written by ``to_dict`` (``{"items": [{"types": [...], "tags": [...]}]}``);
        ValidationError naming ``field_name`` when it is out of shape."""
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValidationError(
                f"{field_name} must be an object with a list of items", field=field_name
            )
        out = []
        for item in items:
            if not isinstance(item, dict) or set(item) - {"types", "tags"}:
                raise ValidationError(
                    f"each item of {field_name} is an object with types and tags", field=field_name
                )
            out.append(QueryItem(item.get("types") or (), item.get("tags") or ()))
        return cls(out)

    def matches(self, event: RecordedEvent) -> bool:
        """Whether ``event`` matches any item."""
        return any(item.matches(event) for item in self.items)

    def first_item(self, event: RecordedEvent) -> int | None:
        """The index of the first item ``event`` matches, or None."""
        for i, item in enumerate(self.items):
            if item.matches(event):
                return i
        return None

    def types(self) -> tuple[str, ...] | None:
        """Every type the query can match, or None when an item matches any type."""
        out: set[str] = set()
        for item in self.items:
            if not item.types:
                return None
            out.update(item.types)
        return tuple(sorted(out))

    def to_dict(self) -> dict[str, list[dict[str, list[str]]]]:
        """The query as JSON-ready data."""
        return {"items": [i.to_dict() for i in self.items]}

    def __str__(self) -> str:
        return " or ".join(str(i) for i in self.items)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Fail an append if an event matching ``fail_if_events_match`` exists after ``after``
    (any such event when ``after`` is None)."""

    fail_if_events_match: Query
    after: Position | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise ValidationError(
                "fail_if_events_match must be a Query", field="fail_if_events_match"
            )
        if self.after is not None and not isinstance(self.after, Position):
            raise ValidationError(f"after must be a Position, got {self.after!r}", field="after")
