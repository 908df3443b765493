"""Given / when / then for business logic: prior events, a command, the expected outcome.

    given(customer, CustomerCreated("Ada", "ada@x")).when(
        "AddLoyaltyPoints", {"points": 5}
    ).then_events(LoyaltyPointsAdded(5))

Runs the same model code the command bus runs (payload schema, decide, evolve), in memory,
with no store and no event loop, and treats events as the bus does: a raw ``chronik.EventData``
of a registered type becomes its class, one of a type not registered is kept as it is and
reaches ``evolve`` (or an ``@apply`` method) as the ``RecordedEvent`` the bus would store
(its id derived from the command id, its position provisional). Prior events may be raw too.
Pass ``registry=`` to also check that every emitted event is registered (or raw) and
encodable, as a dispatch would; without it every raw EventData counts as unregistered.
``then_events`` compares a raw EventData by type, payload, schema version and content type
(and metadata, when the expected one has any), not by its generated event id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from chronik import decisions
from chronik.aggregate import Aggregate, AggregateModel, DomainModel
from chronik.codec import EventRegistry
from chronik.commands import event_id_for
from chronik.dcb import check_tags
from chronik.dcb_decider import DcbDecider
from chronik.deadline_events import is_deadline_event
from chronik.errors import (
    ChronikError,
    CommandRejected,
    ConfigurationError,
    HandlerError,
    UnknownEventType,
)
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    Command,
    EventData,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
    new_event_id,
)
from chronik.store.memory import MemoryEventStore

__all__ = ["Outcome", "Scenario", "given"]

_CHECKS: Final = MemoryEventStore()  # only its append validation (prepare) is used: never opened


def given(
    model: DomainModel | type[Aggregate],
    *events: Any,
    aggregate_id: str = "test-1",
    registry: EventRegistry | None = None,
) -> Scenario:
    """A scenario whose aggregate has already seen ``events`` (typed event instances, or raw
    ``EventData`` of types not registered)."""
    if isinstance(model, type) and issubclass(model, Aggregate):
        model = AggregateModel(model)
    return Scenario(model, list(events), aggregate_id, registry)


class Scenario:
    """Prior events for one aggregate of a model; ``when`` runs a command against them."""

    def __init__(
        self,
        model: DomainModel,
        events: list[Any],
        aggregate_id: str,
        registry: EventRegistry | None,
    ) -> None:
        self.model = model
        self.events = events
        self.aggregate_id = aggregate_id
        self.registry = registry
        self.stream = StreamId(model.domain, aggregate_id)

    def state(self) -> Any:
        """The state after the prior events (each as a load decodes it)."""
        state = self.model.initial(self.aggregate_id)
        stamp = Metadata({})
        for i, event in enumerate(self.events):
            typed = self._typed(event)
            if isinstance(typed, EventData):
                data = _raw(typed, stamp, f"given-{i}", 0)
                (prepared,) = _CHECKS.prepare(self.stream, [data], ANY).events
                typed = _recorded(self.stream, i, prepared)
            state = self.model.evolve(state, typed)
        return state

    def when(self, command: Command | str, payload: Any = None, **fields: Any) -> Outcome:
        """Handle a Command, or a command type with its payload for this aggregate."""
        if isinstance(command, str):
            command = Command(
                domain=self.model.domain,
                aggregate_id=self.aggregate_id,
                type=command,
                payload={} if payload is None else payload,
                **fields,
            )
        if isinstance(self.model, DcbDecider):
            try:
                state = self._dcb_state(self.model, self.model.parse(command))
            except ChronikError as exc:
                return Outcome([], exc, None)
            except Exception as exc:
                return Outcome([], HandlerError(command.domain, command.type, exc), None)
        else:
            state = self.state()
        try:
            decided = self.model.decide(self.model.parse(command), state)
            events = [self._typed(e) for e in decided]
            state = self.model.settle(state, self._evolvable(command, events))
        except ChronikError as exc:
            return Outcome([], exc, state)
        except Exception as exc:
            return Outcome([], HandlerError(command.domain, command.type, exc), state)
        return Outcome(events, None, state)

    def _dcb_state(self, model: DcbDecider, command: Command) -> Any:
        """The state a DcbDecider decides ``command`` on: the prior events its query matches
        (by type and tags, as the store would find them), folded in order."""
        query = model.query(command)
        state = model.initial(self.aggregate_id)
        for i, event in enumerate(self.events):
            typed = self._typed(event)
            if isinstance(typed, EventData):
                etype, tags = typed.type, check_tags(typed.tags)
            elif self.registry is not None:
                etype, tags = self.registry.name_of(typed), check_tags(model.tags_of(typed))
            else:
                raise ConfigurationError("given(..., registry=) is needed for typed DCB events")
            probe = RecordedEvent(
                "", self.stream, i, etype, 1, b"", Position(0), 0, None, JSON, tags
            )
            if query.matches(probe):
                state = model.evolve(state, probe if isinstance(typed, EventData) else typed)
        return state

    def _typed(self, event: Any) -> Any:
        """As the bus types a decided event: a registered instance, an EventData of a
        registered type converted to its class, or a raw EventData of an unregistered type."""
        if self.registry is None:
            if isinstance(event, type) or event is None:
                raise UnknownEventType(repr(event))
            return event
        return decisions.typed(self.registry, event)

    def _evolvable(self, command: Command, events: list[Any]) -> list[Any]:
        """The events the state evolves with, as the bus gives them: typed ones as they are,
        raw ones as RecordedEvents; each checked as the append would check it."""
        command_id = command.command_id or new_event_id()
        metadata = Metadata.of(command.metadata).of_command(command_id)
        checked: list[tuple[int, EventData]] = []
        for i, e in enumerate(events):
            if isinstance(e, EventData):
                checked.append((i, _raw(e, metadata, command_id, i)))
            elif self.registry is not None:
                data = self.registry.to_event_data(e, metadata, event_id_for(command_id, i))
                checked.append((i, data))
        if not checked:
            return [e for e in events if not is_deadline_event(e)]
        expected = NO_STREAM if not self.events else len(self.events) - 1
        prepared = _CHECKS.prepare(self.stream, [d for _, d in checked], expected).events
        by_index = dict(zip((i for i, _ in checked), prepared, strict=True))
        first = len(self.events)
        return [
            _recorded(self.stream, first + i, by_index[i]) if isinstance(e, EventData) else e
            for i, e in enumerate(events)
            if not is_deadline_event(e)
        ]


def _raw(event: EventData, metadata: Metadata, command_id: str, index: int) -> EventData:
    """A raw EventData as the bus appends it: the command's metadata, a derived id."""
    return EventData(
        event.type,
        event.payload,
        Metadata({**metadata, **Metadata.of(event.metadata)}),
        event_id_for(command_id, index),
        event.schema_version,
        event.content_type,
        event.tags,
    )


def _recorded(stream: StreamId, sequence: int, p: Any) -> RecordedEvent:
    """The RecordedEvent a load gives a prepared raw event (a provisional position)."""
    return RecordedEvent(
        p.event_id,
        stream,
        sequence,
        p.type,
        p.schema_version,
        p.payload,
        Position(0),
        time.time_ns() // 1000,
        p.metadata,
        p.content_type,
        p.tags,
    )


def _same(expected: Any, actual: Any) -> bool:
    """Whether an event matches the expected one (a raw EventData: by content, not by id)."""
    if not (isinstance(expected, EventData) and isinstance(actual, EventData)):
        return bool(expected == actual)
    return (
        expected.type == actual.type
        and _builtins(expected.payload) == _builtins(actual.payload)
        and expected.schema_version == actual.schema_version
        and expected.content_type == actual.content_type
        and (
            expected.metadata is None
            or Metadata.of(expected.metadata) == Metadata.of(actual.metadata)
        )
    )


def _builtins(payload: Any) -> Any:
    return payload if isinstance(payload, bytes) else msgspec.to_builtins(payload)


class Outcome:
    """What a command did in a scenario: its events, or the error it raised."""

    def __init__(self, events: list[Any], error: BaseException | None, state: Any) -> None:
        self.events = events
        self.error = error
        self.state = state

    def then_events(self, *expected: Any) -> Outcome:
        """Assert the command succeeded with exactly these events, in order."""
        if self.error is not None:
            raise AssertionError(f"expected events {list(expected)}, got {self.error!r}")
        same = len(self.events) == len(expected) and all(
            _same(e, a) for e, a in zip(expected, self.events, strict=True)
        )
        if not same:
            raise AssertionError(f"expected events {list(expected)}, got {self.events}")
        return self

    def then_no_events(self) -> Outcome:
        """Assert the command succeeded without producing events."""
        return self.then_events()

    def then_rejected(self, reason: str | None = None) -> Outcome:
        """Assert the command was rejected (with exactly ``reason``, if given)."""
        if not isinstance(self.error, CommandRejected):
            raise AssertionError(f"expected a rejection, got {self.error or self.events!r}")
        if reason is not None and self.error.reason != reason:
            raise AssertionError(f"expected rejection {reason!r}, got {self.error.reason!r}")
        return self

    def then_error(self, error_type: type[BaseException], match: str | None = None) -> Outcome:
        """Assert the command failed with ``error_type`` (its message containing ``match``)."""
        if not isinstance(self.error, error_type):
            raise AssertionError(
                f"expected {error_type.__name__}, got {self.error or self.events!r}"
            )
        if match is not None and match not in str(self.error):
            raise AssertionError(f"expected {match!r} in {str(self.error)!r}")
        return self

    def then_state(self, check: Callable[[Any], object]) -> Outcome:
        """Assert ``check(state after the command)`` is true."""
        if self.error is not None:
            raise AssertionError(f"the command failed: {self.error!r}")
        if not check(self.state):
            raise AssertionError(f"state check failed on {self.state!r}")
        return self
