"""Given / when / then for business logic: prior events, a command, the expected outcome.

    given(customer, CustomerCreated("Ada", "ada@x")).when(
        "AddLoyaltyPoints", {"points": 5}
    ).then_events(LoyaltyPointsAdded(5))

Runs the same model code the command bus runs (payload schema, decide, evolve), in memory,
with no store and no event loop. Pass ``registry=`` to also check that every emitted event is
registered and encodable, as a dispatch would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from chronik.aggregate import Aggregate, AggregateModel, DomainModel
from chronik.codec import EventRegistry
from chronik.errors import ChronikError, CommandRejected, HandlerError
from chronik.messages import Command

__all__ = ["Outcome", "Scenario", "given"]


def given(
    model: DomainModel | type[Aggregate],
    *events: Any,
    aggregate_id: str = "test-1",
    registry: EventRegistry | None = None,
) -> Scenario:
    """A scenario whose aggregate has already seen ``events`` (typed event instances)."""
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

    def state(self) -> Any:
        """The state after the prior events."""
        state = self.model.initial(self.aggregate_id)
        for event in self.events:
            state = self.model.evolve(state, event)
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
        state = self.state()
        try:
            events = self.model.decide(self.model.parse(command), state)
            if self.registry is not None:
                for event in events:
                    self.registry.to_event_data(event)
                    msgspec.json.encode(event)
            state = self.model.settle(state, events)
        except ChronikError as exc:
            return Outcome([], exc, state)
        except Exception as exc:
            return Outcome([], HandlerError(command.domain, command.type, exc), state)
        return Outcome(events, None, state)


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
        if self.events != list(expected):
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
