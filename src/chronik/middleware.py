"""The command bus's middleware: around every dispatch, and around every call of the logic.

``DispatchMiddleware`` (``async def mw(command, call_next) -> CommandResult``) wraps a whole
dispatch; ``HandlerMiddleware`` (``async def mw(command, state, call_next) -> events``) wraps
each call of a domain's business logic, once per decision. ``Chains`` keeps both lists and the
chains built from them: built when a middleware or a domain is added, never per command. The
first middleware added is the outermost. The type names (``Dispatch``, ``DispatchMiddleware``,
``HandlerFn``, ``HandlerMiddleware``) live in ``chronik.commands``, beside ``CommandResult``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from chronik.domain_model import DomainModel
from chronik.messages import Command

if TYPE_CHECKING:
    from chronik.commands import (
        CommandResult,
        Dispatch,
        DispatchMiddleware,
        HandlerFn,
        HandlerMiddleware,
    )

__all__ = ["Chains", "as_list"]


class Chains:
    """The middleware of one bus and the chains built from them (rebuilt on every change)."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._inner = dispatch
        self._dispatch_middleware: list[DispatchMiddleware] = []
        self._handler_middleware: list[HandlerMiddleware] = []
        self._models: dict[str, DomainModel] = {}
        self._handlers: dict[str, HandlerFn] = {}
        #: the dispatch wrapped in every dispatch middleware
        self.dispatch: Dispatch = dispatch
        #: no handler middleware: the bus may call a model's ``decide`` itself
        self.bare_handlers = True

    def use(self, middleware: DispatchMiddleware) -> None:
        """Add a dispatch middleware (innermost so far) and rebuild the dispatch chain."""
        self._dispatch_middleware.append(middleware)
        chain = self._inner
        for mw in reversed(self._dispatch_middleware):
            chain = _bind_dispatch(mw, chain)
        self.dispatch = chain

    def use_handler(self, middleware: HandlerMiddleware) -> None:
        """Add a handler middleware (innermost so far) and rebuild every domain's chain."""
        self._handler_middleware.append(middleware)
        self.bare_handlers = False
        for model in self._models.values():
            self._handlers[model.domain] = self._handler_chain(model)

    def add_model(self, model: DomainModel) -> None:
        """Build the handler chain of a newly registered domain."""
        self._models[model.domain] = model
        self._handlers[model.domain] = self._handler_chain(model)

    def handler(self, model: DomainModel) -> HandlerFn:
        """The chain that calls ``model``'s business logic through the handler middleware."""
        return self._handlers[model.domain]

    def _handler_chain(self, model: DomainModel) -> HandlerFn:
        call = _logic(model)
        for mw in reversed(self._handler_middleware):
            call = _bind_handler(mw, call)
        return call


def _logic(model: DomainModel) -> HandlerFn:
    """The model's ``decide`` as an async function returning a list of events."""

    async def decide(command: Command, state: Any) -> list[Any]:
        events: Any = model.decide(command, state)
        if type(events) is list:  # the common case (a Decider's): no awaitable check, no copy
            return events
        return await as_list(events)

    return decide


async def as_list(events: Any) -> list[Any]:
    """What a model's ``decide`` returned that is not a list, as one (awaited first)."""
    if inspect.isawaitable(events):
        events = await events
    return list(events)


def _bind_dispatch(mw: DispatchMiddleware, call_next: Dispatch) -> Dispatch:
    async def call(command: Command) -> CommandResult:
        return await mw(command, call_next)

    return call


def _bind_handler(mw: HandlerMiddleware, call_next: HandlerFn) -> HandlerFn:
    async def call(command: Command, state: Any) -> list[Any]:
        return await mw(command, state, call_next)

    return call
