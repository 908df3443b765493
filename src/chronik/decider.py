"""Functional business logic: a ``Decider`` is ``decide``, ``evolve`` and ``initial`` functions.

``decide(command, state) -> event | [events] | None`` (raise ``CommandRejected`` to refuse),
``evolve(state, event) -> state`` and ``initial()``. Import it from ``chronik`` (or
``chronik.aggregate``); this module imports only the domain model and messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from chronik.domain_model import CommandSpec, DomainModel, Snapshots, check_domain
from chronik.messages import Command, Snapshot

__all__ = ["Decider", "events_of"]

_encoder = msgspec.json.Encoder()
_MANY = (list, tuple)  # a tuple of types: ``list | tuple`` would make a union at each call


def events_of(result: Any) -> list[Any]:
    """What ``decide`` returned as a list: None is no event, one event a list of one."""
    if result is None:
        return []
    if isinstance(result, _MANY):
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
        check_domain(domain)
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

    def evolver(self) -> Callable[[Any, Any], Any]:
        return self._evolve

    def decide(self, command: Command, state: Any) -> list[Any]:
        result = self._decide(command, state)
        if result is None or isinstance(result, _MANY):
            return events_of(result)
        return [result]  # one event (the common case): as events_of makes it, one call less

    def settle(self, state: Any, events: list[Any]) -> Any:
        evolve = self._evolve  # the function itself: no method call in between per event
        for event in events:
            state = evolve(state, event)
        return state

    def encode_state(self, state: Any) -> bytes:
        return _encoder.encode(state)

    def decode_state(self, snapshot: Snapshot) -> Any:
        return self._state_decoder.decode(snapshot.state)
