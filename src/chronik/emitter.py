"""The in-process emitter: handlers that run after a command's unit of work committed.

``Chronik.on_committed(type_or_predicate, handler)`` registers a handler here. The command bus
hands every command result to ``Emitter.committed`` after the append committed (while it still
holds the stream's lock, so one stream's events are queued in the order they were stored);
a result of a command that was rejected, raised, lost every append race or was a duplicate of
an earlier dispatch carries no new events and queues nothing. With no handler registered,
``committed`` returns at once: the command path allocates nothing for it.

The events wait in a bounded in-process queue that one task of the app (``committed
emitter`` in ``app.health``) drains, handler by handler, in queue order, off the caller's
path: ``dispatch`` has its result before any handler runs. A handler that raises is logged
with the event id and does not stop the others. Delivery is **at most once within the
process**: events queued when the process crashes, when the queue is full, before the app is
open or after ``close``'s grace period are lost (logged and counted in ``dropped``). Use a
projection for effects that must not be lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Final, TypeVar

from chronik.errors import ValidationError
from chronik.health import Supervisor
from chronik.messages import TYPE_NAME_RE, RecordedEvent

if TYPE_CHECKING:
    from chronik.commands import CommandResult

__all__ = ["TASK_NAME", "CommittedHandler", "Emitter", "Handler", "Matcher", "parse_matcher"]

log = logging.getLogger("chronik.emitter")
TASK_NAME: Final = "committed emitter"
DEFAULT_QUEUE_SIZE: Final = 10_000
#: ``async def handler(event) -> None`` (a plain function works too)
Handler = Callable[[RecordedEvent], Awaitable[None] | None]
#: an event type name, a collection of them, or ``(event) -> bool``
Matcher = str | Collection[str] | Callable[[RecordedEvent], bool]
R = TypeVar("R", bound="CommandResult")


class CommittedHandler:
    """One registered handler: what it matches; ``remove()`` unregisters it, and calling it
    calls the handler (so a decorated function stays callable)."""

    __slots__ = ("_emitter", "handler", "predicate", "types")

    def __init__(
        self,
        emitter: Emitter,
        types: frozenset[str] | None,
        predicate: Callable[[RecordedEvent], bool] | None,
        handler: Handler,
    ) -> None:
        self._emitter = emitter
        self.types = types
        self.predicate = predicate
        self.handler = handler

    def matches(self, event: RecordedEvent) -> bool:
        """Whether ``event`` is for this handler (a predicate that raises propagates)."""
        if self.types is not None:
            return event.type in self.types
        assert self.predicate is not None
        return bool(self.predicate(event))

    def remove(self) -> None:
        """Unregister the handler (events already queued no longer reach it); idempotent."""
        self._emitter.remove(self)

    def __call__(self, event: RecordedEvent) -> Awaitable[None] | None:
        return self.handler(event)

    def __repr__(self) -> str:
        what = sorted(self.types) if self.types is not None else self.predicate
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"<CommittedHandler {name} for {what}>"


def parse_matcher(
    type_or_predicate: Matcher,
) -> tuple[frozenset[str] | None, Callable[[RecordedEvent], bool] | None]:
    """The type names or the predicate of ``type_or_predicate``, checked."""
    field = "type_or_predicate"
    if isinstance(type_or_predicate, str):
        names: Collection[str] = [type_or_predicate]
    elif isinstance(type_or_predicate, Collection):
        names = type_or_predicate
    elif callable(type_or_predicate):
        return None, type_or_predicate
    else:
        raise ValidationError(
            f"expected an event type, a collection of them or a predicate, got "
            f"{type_or_predicate!r}",
            field=field,
        )
    if not names:
        raise ValidationError("no event type given", field=field)
    for name in names:
        if not isinstance(name, str) or not TYPE_NAME_RE.fullmatch(name):
            raise ValidationError(f"invalid event type {name!r}", field=field)
    return frozenset(names), None


class Emitter:
    """The registry of after-commit handlers, their bounded queue and the task draining it."""

    def __init__(self, max_queue: int = DEFAULT_QUEUE_SIZE) -> None:
        if type(max_queue) is not int or max_queue < 1:
            raise ValidationError("max_queue must be an int >= 1", field="max_queue")
        self.max_queue = max_queue
        self._handlers: tuple[CommittedHandler, ...] = ()
        self._types: frozenset[str] = frozenset()  # every name a type handler matches
        self._any_predicate = False
        self._queue: deque[RecordedEvent] = deque()
        self._wake: asyncio.Event | None = None
        self._accepting = False
        self._closing = False
        self._health: Supervisor | None = None
        #: events handed to handlers, handler calls that raised, events lost (see module doc)
        self.emitted = 0
        self.failed = 0
        self.dropped = 0

    # --- registering ------------------------------------------------------------------------

    def add(self, type_or_predicate: Matcher, handler: Handler) -> CommittedHandler:
        """Register ``handler`` for the events ``type_or_predicate`` matches."""
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {handler!r}", field="handler")
        types, predicate = parse_matcher(type_or_predicate)
        registered = CommittedHandler(self, types, predicate, handler)
        self._handlers = (*self._handlers, registered)
        self._index()
        return registered

    def remove(self, registered: CommittedHandler) -> None:
        """Unregister a handler ``add`` returned (no error if it is not registered)."""
        self._handlers = tuple(h for h in self._handlers if h is not registered)
        self._index()

    def _index(self) -> None:
        self._types = frozenset(t for h in self._handlers if h.types for t in h.types)
        self._any_predicate = any(h.predicate is not None for h in self._handlers)

    @property
    def handlers(self) -> tuple[CommittedHandler, ...]:
        """The registered handlers, in registration order."""
        return self._handlers

    @property
    def pending(self) -> int:
        """How many events wait in the queue."""
        return len(self._queue)

    # --- the command path -------------------------------------------------------------------

    def committed(self, result: R) -> R:
        """Queue the new events of a committed command's ``result`` for the handlers that may
        match them; return ``result``. Never blocks and never raises."""
        if self._handlers and result.events and not result.duplicate:
            self._enqueue(result.events)
        return result

    def _enqueue(self, events: list[RecordedEvent]) -> None:
        for event in events:
            if not self._any_predicate and event.type not in self._types:
                continue
            if not self._accepting:
                self._drop(event, "the app is not open")
            elif len(self._queue) >= self.max_queue:
                self._drop(event, f"the queue is full ({self.max_queue} events)")
            else:
                self._queue.append(event)
        if self._queue and self._wake is not None:
            self._wake.set()

    def _drop(self, event: RecordedEvent, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "on_committed: event %s (%s) not emitted: %s (%d dropped so far)",
                event.event_id,
                event.type,
                why,
                self.dropped,
            )

    # --- the task ---------------------------------------------------------------------------

    def start(self, health: Supervisor) -> None:
        """Start draining in a task of ``health`` (idempotent while it runs)."""
        info = health.tasks.get(TASK_NAME)
        if self._accepting and info is not None and info.state == "running":
            return
        self._health, self._closing, self._accepting = health, False, True
        self._wake = asyncio.Event()
        health.supervise(TASK_NAME, self.run, restart=False)

    async def run(self) -> None:
        """Hand the queued events to their handlers until ``stop`` (a crash stops accepting:
        the task is then dead in health, and events are dropped, not queued forever)."""
        wake = self._wake if self._wake is not None else asyncio.Event()
        self._wake = wake
        try:
            while True:
                while self._queue:
                    await self._deliver(self._queue.popleft())
                if self._closing:
                    return
                wake.clear()
                if not self._queue:
                    await wake.wait()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._accepting = False
            raise

    async def _deliver(self, event: RecordedEvent) -> None:
        self.emitted += 1
        for registered in self._handlers:
            try:
                if not registered.matches(event):
                    continue
                outcome = registered.handler(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the emitter is being stopped
                self._failed(registered, event, "was cancelled")
            except Exception as exc:
                self._failed(registered, event, repr(exc), exc)

    def _failed(
        self,
        registered: CommittedHandler,
        event: RecordedEvent,
        what: str,
        exc: Exception | None = None,
    ) -> None:
        self.failed += 1
        log.error(
            "on_committed handler %r failed on event %s (%s): %s",
            registered,
            event.event_id,
            event.type,
            what,
            exc_info=exc,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Hand what is queued (and what the handlers' own commands add) to the handlers for
        at most ``grace`` s, then stop the task and accepting; events still queued then are
        dropped (logged)."""
        health, self._health = self._health, None
        if health is None:
            return
        self._closing = True
        info = health.tasks.get(TASK_NAME)
        task = info.task if info is not None else None
        if self._wake is not None:
            self._wake.set()
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=grace)
        self._accepting = False
        await health.stop_task(TASK_NAME)
        left, self._queue = len(self._queue), deque()
        if left:
            self.dropped += left
            log.warning("on_committed: %d queued events dropped at close", left)

    def __repr__(self) -> str:
        state = "accepting" if self._accepting else "idle"
        return f"<Emitter {state} handlers={len(self._handlers)} pending={len(self._queue)}>"
