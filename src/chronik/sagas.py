"""Sagas (process managers): state per instance, commands out, compensation, deadlines.

A saga declares the events that start an instance, the events it handles and how an event is
associated with an instance (a payload key, or the correlation id). It runs on the projection
machinery, so each instance's state is a row committed with the saga's checkpoint (effectively
once), events of one stream arrive in order, and failures retry, park or stop like any
projection. Commands a handler sends get ids derived from (saga, instance, event, index), so an
event handled twice never acts twice; when one is rejected the saga's ``on_rejected`` handler
may send compensating commands.

Deadlines ("if not paid within 15 minutes, cancel") are rows of the saga's own table. A
``DeadlineScheduler`` (one active per store, by lease; overdue deadlines fire on start) appends
a ``chronik.DeadlineFired`` event with an id derived from the deadline when it is due; the saga
handles it in order like any event: a deadline fires once, and not at all once cancelled.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from chronik.commands import Dispatch
from chronik.deadlines import DEADLINE_FIRED, Clock, SystemClock
from chronik.errors import CommandRejected, ConfigurationError, ValidationError
from chronik.messages import Command, Metadata, RecordedEvent
from chronik.projections import Projection, ReadModel, Table
from chronik.projections.projection import ErrorPolicy

__all__ = ["Saga", "SagaContext"]

log = logging.getLogger("chronik.sagas")
S = TypeVar("S")


class SagaContext:
    """What a saga handler can do besides changing its state."""

    def __init__(self, instance_id: str, event: RecordedEvent, clock: Clock) -> None:
        self.instance_id = instance_id
        self.event = event
        self.clock = clock
        self.commands: list[Command] = []
        self.scheduled: dict[str, tuple[int, bytes]] = {}
        self.cancelled: set[str] = set()
        self.ended = False

    def send(self, command: Command) -> None:
        """Dispatch ``command`` once this handler returns (its id is derived; never twice)."""
        if not isinstance(command, Command):
            raise ValidationError(f"expected a Command, got {command!r}", field="command")
        self.commands.append(command)

    def schedule(self, name: str, after: float, payload: Any = None) -> None:
        """Fire deadline ``name`` of this instance ``after`` seconds from now (replacing one
        of the same name)."""
        due = self.clock.now_us() + int(after * 1_000_000)
        self.scheduled[name] = (due, msgspec.json.encode(payload))
        self.cancelled.discard(name)

    def cancel(self, name: str) -> None:
        """Cancel deadline ``name`` of this instance (no error if there is none)."""
        self.scheduled.pop(name, None)
        self.cancelled.add(name)

    def end(self) -> None:
        """End this instance: later events and deadlines for it are ignored."""
        self.ended = True


Handler = Callable[[Any, RecordedEvent, SagaContext], Any]


class Saga(Generic[S]):
    """A process manager: ``Saga("shipping", state=Shipping, associate="order_id")``.

    ``associate`` is a payload key, ``"correlation_id"``, or a function of the event returning
    the instance id (None: the event is not for this saga). Handlers take (state, event, ctx)
    and return the new state; they may be async.
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        associate: str | Callable[[RecordedEvent], str | None],
        policy: ErrorPolicy | None = None,
    ) -> None:
        self.name = name
        self.state_type = state
        self._decoder = msgspec.json.Decoder(state)
        self.associate = _associator(associate)
        self.policy = policy
        self.starters: set[str] = set()
        self.handlers: dict[str, Handler] = {}
        self.deadline_handlers: dict[str, Handler] = {}
        self.rejected: Callable[[Any, Command, str, SagaContext], Any] | None = None
        self.instances = Table(
            f"{name}_instances",
            {"instance_id": str, "state": bytes, "ended": int},
            primary_key="instance_id",
        )
        self.deadlines = Table(
            f"{name}_deadlines",
            {"instance_id": str, "name": str, "due_us": int, "payload": bytes},
            primary_key=("instance_id", "name"),
        )

    @property
    def deadline_table(self) -> str:
        """The table of this saga's pending deadlines."""
        return self.deadlines.name

    def starts_with(self, *types: str) -> Callable[[Handler], Handler]:
        """Handlers of events that may start a new instance."""
        self.starters.update(types)
        return self.on(*types)

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        """Handlers of events for existing instances."""

        def register(fn: Handler) -> Handler:
            for t in types:
                if t in self.handlers:
                    raise ConfigurationError(f"saga {self.name}: {t!r} already has a handler")
                self.handlers[t] = fn
            return fn

        return register

    def on_deadline(self, name: str) -> Callable[[Handler], Handler]:
        """The handler of deadline ``name``: (state, fired event, ctx) -> state."""

        def register(fn: Handler) -> Handler:
            self.deadline_handlers[name] = fn
            return fn

        return register

    def on_rejected(self, fn: Callable[[Any, Command, str, SagaContext], Any]) -> Any:
        """The compensation handler: (state, rejected command, reason, ctx) -> state."""
        self.rejected = fn
        return fn

    def projection(self, dispatch: Dispatch, clock: Clock | None = None) -> Projection:
        """The projection that runs this saga, sending its commands through ``dispatch``."""
        clock = clock or SystemClock()
        projection = Projection(
            self.name, tables=[self.instances, self.deadlines], policy=self.policy
        )

        async def handle(event: RecordedEvent, rm: ReadModel) -> None:
            await self._handle(event, rm, dispatch, clock)

        projection.on(*self.handlers, DEADLINE_FIRED)(handle)
        projection.saga = self  # type: ignore[attr-defined]  # found by chronik serve
        return projection

    async def _handle(
        self, event: RecordedEvent, rm: ReadModel, dispatch: Dispatch, clock: Clock
    ) -> None:
        deadline: str | None = None
        if event.type == DEADLINE_FIRED:
            fired = event.json()
            if fired.get("owner") != self.name:
                return
            instance, deadline = fired["instance_id"], fired["name"]
            row = await rm.get(self.deadlines.name, instance_id=instance, name=deadline)
            if row is None or row["due_us"] != fired["due_us"]:
                return  # cancelled or moved since the scheduler saw it
            rm.delete(self.deadlines.name, instance_id=instance, name=deadline)
            handler = self.deadline_handlers.get(deadline)
        else:
            found = self.associate(event)
            if found is None:
                return
            instance = found
            handler = self.handlers[event.type]
        current = await rm.get(self.instances.name, instance_id=instance)
        if current is None:
            if event.type not in self.starters:
                return
            state: Any = self.state_type()
        elif current["ended"]:
            return
        else:
            state = self._decoder.decode(current["state"])
        ctx = SagaContext(instance, event, clock)
        if handler is not None:
            state = await _call(handler, state, event, ctx)
        key = f"{self.name}:{instance}:{event.event_id}"
        for i, command in enumerate(ctx.commands):
            state = await self._send(command, f"{key}:{i}", event, state, ctx, dispatch)
        for name, (due, payload) in ctx.scheduled.items():
            rm.upsert(
                self.deadlines.name, instance_id=instance, name=name, due_us=due, payload=payload
            )
        for name in ctx.cancelled:
            rm.delete(self.deadlines.name, instance_id=instance, name=name)
        rm.upsert(
            self.instances.name,
            instance_id=instance,
            state=msgspec.json.encode(state),
            ended=int(ctx.ended),
        )

    async def _send(
        self,
        command: Command,
        command_id: str,
        event: RecordedEvent,
        state: Any,
        ctx: SagaContext,
        dispatch: Dispatch,
    ) -> Any:
        metadata = Metadata.of(command.metadata).with_values(
            correlation_id=event.metadata.correlation_id or event.event_id,
            causation_id=event.event_id,
        )
        command = msgspec.structs.replace(command, command_id=command_id, metadata=metadata)
        try:
            await dispatch(command)
        except CommandRejected as exc:
            if self.rejected is None:
                log.info("saga %s: %s rejected: %s", self.name, command.type, exc.reason)
                return state
            undo = SagaContext(ctx.instance_id, event, ctx.clock)
            state = await _call(self.rejected, state, command, exc.reason, undo)
            for j, compensation in enumerate(undo.commands):
                comp = msgspec.structs.replace(
                    compensation, command_id=f"{command_id}:undo:{j}", metadata=metadata
                )
                try:
                    await dispatch(comp)
                except CommandRejected as again:
                    log.warning("saga %s: compensation rejected: %s", self.name, again.reason)
            ctx.scheduled.update(undo.scheduled)
            ctx.cancelled |= undo.cancelled
            ctx.ended = ctx.ended or undo.ended
        return state


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


def _associator(spec: str | Callable[[RecordedEvent], str | None]) -> Callable[..., str | None]:
    if callable(spec):
        return spec
    if spec == "correlation_id":
        return lambda event: event.metadata.correlation_id

    def by_key(event: RecordedEvent) -> str | None:
        value = event.json().get(spec) if event.content_type == "application/json" else None
        return None if value is None else str(value)

    return by_key
