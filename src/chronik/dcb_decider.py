"""Business logic over dynamic consistency boundaries: a ``DcbDecider``.

Where a ``Decider`` decides over one stream, a ``DcbDecider`` decides over the events a query
finds, so one command can span several entities (a course and a student) with no aggregate
holding both. ``query(command) -> chronik.Query`` names the events the command needs; the command
bus reads them in the command's tenant (``store.read_query(..., tenant=)``: another tenant's
events never count, as for the condition), folds them with ``evolve`` from ``initial()``, runs
``decide(command, state)`` and appends the decided events with the condition built from the same
query and the position of the last event read, deciding again when another writer got there
first (``AppendConditionFailed``), as it does for a stream conflict. The decided events carry
tags: an ``EventData`` its own, a registered event those ``tags(event)`` gives.
This module imports only the domain model, DCB values and messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chronik.dcb import Query
from chronik.decider import events_of
from chronik.domain_model import CommandSpec, DomainModel, check_domain
from chronik.errors import ConfigurationError
from chronik.messages import Command, Snapshot

__all__ = ["DcbDecider"]


class DcbDecider(DomainModel):
    """Functional business logic whose state is the fold of the events a query finds.

    ``query(command)`` returns the ``chronik.Query`` of the events the command needs;
    ``decide(command, state)`` returns an event, a list of events or None (raise
    ``CommandRejected`` to refuse); ``evolve(state, event)`` folds one event (a registered
    event as its class, any other as the ``RecordedEvent``); ``tags(event)`` gives the tags of
    a decided registered event (an ``EventData`` carries its own). ``commands`` maps command
    types to payload schemas, as for ``Decider``. A command's ``aggregate_id`` only routes it
    (commands with the same one are decided one at a time in a process); the consistency
    boundary is the query. Tagged events are stored in the decider's domain.
    """

    snapshots = None
    cacheable = False

    def __init__(
        self,
        domain: str,
        query: Callable[[Command], Query],
        decide: Callable[[Command, Any], Any],
        evolve: Callable[[Any, Any], Any],
        initial: Callable[[], Any] = dict,
        *,
        tags: Callable[[Any], Iterable[str]] | None = None,
        commands: Mapping[str, type[Any] | None] | None = None,
    ) -> None:
        check_domain(domain)
        if not callable(query) or not callable(decide) or not callable(evolve):
            raise ConfigurationError("DcbDecider needs query, decide and evolve functions")
        self.domain = domain
        self.state_type = domain
        self.state_version = 1
        self._query = query
        self._decide = decide
        self._evolve = evolve
        self._initial = initial
        self._tags = tags
        self.commands = (
            None if commands is None else {n: CommandSpec(n, s) for n, s in commands.items()}
        )

    def query(self, command: Command) -> Query:
        """The query of the events ``command`` needs (TypeError if the function returned
        something else: the bus reports it as the handler's failure)."""
        query = self._query(command)
        if not isinstance(query, Query):
            raise TypeError(f"query({command.type}) returned {query!r}, not a chronik.Query")
        return query

    def tags_of(self, event: Any) -> list[str]:
        """The tags of a decided registered event (none without a ``tags`` function); the
        append checks them (ValidationError naming ``tags``)."""
        return [] if self._tags is None else list(self._tags(event))

    def initial(self, aggregate_id: str) -> Any:
        return self._initial()

    def evolve(self, state: Any, event: Any) -> Any:
        return self._evolve(state, event)

    def evolver(self) -> Callable[[Any, Any], Any]:
        """The ``evolve`` function itself: the fold calls it with no call in between."""
        return self._evolve

    def decide(self, command: Command, state: Any) -> list[Any]:
        return events_of(self._decide(command, state))

    def encode_state(self, state: Any) -> bytes:
        raise ConfigurationError("a DcbDecider's state is read from its query, never snapshotted")

    def decode_state(self, snapshot: Snapshot) -> Any:
        raise ConfigurationError("a DcbDecider's state is read from its query, never snapshotted")
