"""Sagas (process managers): state per instance, commands out, compensation, deadlines.

A saga declares the events that start an instance, the events it handles and how an event is
associated with an instance (a payload key, or the correlation id). It runs on the projection
machinery, so each instance's state is a row committed with the saga's checkpoint (effectively
once), events of one stream arrive in order, and failures retry, park or stop like any
projection. Commands a handler sends get ids derived from (saga, instance, event, index); when
one is rejected the saga's ``on_rejected`` handler may send compensating commands.

Decisions are recorded, not repeated (chronik.saga_record): each command is recorded with its
outcome (accepted with its event ids, or rejected with the reason) before the saga moves on, in
a table that no rebuild or reset touches. A retry, reset, rebuild or new version runs the
handlers again to rebuild the state, but ``send`` then answers from the record: nothing that was
sent is sent again, a rejection stays a rejection (``on_rejected`` runs with the recorded
reason, its compensations come from the record too), and commands that changed code derives
from past events are not sent. Deadlines are due at the triggering event's record time plus the
delay, so a replay arms them at the same time and one that fired never fires again.

Deadlines ("if not paid within 15 minutes, cancel") are rows of the saga's own table. A
``DeadlineScheduler`` (one active per store, by lease; overdue deadlines fire on start) appends
a ``chronik.DeadlineFired`` event with an id derived from the deadline when it is due; the saga
handles it in order like any event: a deadline fires once, and not at all once cancelled.

Tenants: instances and deadlines are rows of ``per_tenant`` tables, so the same instance id in
two tenants names two instances; a handler's reads and writes are scoped to the tenant of the
event it handles, the commands it sends go to that tenant (a command naming another is
refused), and its deadlines fire into that tenant's log. The tables' shape is the saga's
storage version (``STORAGE``): the projection's version is ``version + STORAGE - 1``, so a
deployment whose tables predate the tenant column builds new ones by a rebuild (blue/green,
never mixing shapes) while the old serve, and the decision record answers for what it sent.
A deadline that fired before the upgrade (into the default tenant, its instance's tenant not
named) is matched to its instance's row in whichever tenant holds it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from chronik.commands import Dispatch
from chronik.deadlines import DEADLINE_FIRED, Clock, SystemClock
from chronik.errors import ConfigurationError, ValidationError
from chronik.messages import Command, Metadata, RecordedEvent
from chronik.projections import Projection, ReadModel, Table
from chronik.projections.projection import ErrorPolicy
from chronik.projections.readmodel import TENANT
from chronik.saga_record import Outcome, Recorder
from chronik.store.base import EventStore

__all__ = ["STORAGE", "Saga", "SagaContext"]

log = logging.getLogger("chronik.sagas")
S = TypeVar("S")
#: The storage version of a saga's tables (2: per tenant). Its projection's version is the
#: saga's ``version`` plus ``STORAGE - 1``: a new storage version rebuilds every saga once.
STORAGE = 2


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
        """Fire deadline ``name`` of this instance ``after`` seconds after the handled event was
        recorded (replacing one of the same name): a replay arms it at the same time, so a
        deadline that fired does not fire again (its fired event has an id derived from it)."""
        due = self.event.recorded_at_us + int(after * 1_000_000)
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
    and return the new state; they may be async. Bump ``version`` when the handlers change in a
    way that needs the state rebuilt (see ``STORAGE``).
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        associate: str | Callable[[RecordedEvent], str | None],
        policy: ErrorPolicy | None = None,
        version: int = 1,
    ) -> None:
        if type(version) is not int or version < 1:
            raise ValidationError(f"version must be an int >= 1, got {version!r}")
        self.name = name
        self.version = version
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
            per_tenant=True,
        )
        self.deadlines = Table(
            f"{name}_deadlines",
            {"instance_id": str, "name": str, "due_us": int, "payload": bytes},
            primary_key=("instance_id", "name"),
            per_tenant=True,
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
        """The projection that runs this saga, sending its commands through ``dispatch`` (each
        recorded with its outcome, see chronik.saga_record)."""
        clock = clock or SystemClock()
        projection = Projection(
            self.name,
            tables=[self.instances, self.deadlines],
            policy=self.policy,
            version=self.version + STORAGE - 1,
        )
        recorder = Recorder(self.name, dispatch)

        async def handle(event: RecordedEvent, rm: ReadModel) -> None:
            await self._handle(event, rm, recorder, clock)

        projection.on(*self.handlers, DEADLINE_FIRED)(handle)
        projection.saga = self  # type: ignore[attr-defined]  # found by chronik serve
        return projection

    async def _handle(
        self, event: RecordedEvent, rm: ReadModel, recorder: Recorder, clock: Clock
    ) -> None:
        past = await recorder.past(rm, event)
        if event.type != DEADLINE_FIRED:
            await self._step(event, rm, recorder, clock, past, None)
            return
        fired = event.json()
        if fired.get("owner") != self.name:
            return
        key = {"instance_id": fired["instance_id"], "name": fired["name"]}
        row = await rm.get(self.deadlines.name, **key)
        tenant = rm.tenant
        if row is None and event.stream.tenant == "" and "tenant" not in fired:
            # fired before the tables were per tenant: its instance's tenant was not named
            due = {"due_us": fired["due_us"]}
            rows = await rm.query_every_tenant(self.deadlines.name, **key, **due)
            row = rows[0] if len(rows) == 1 else None
            if row is not None:
                rm.tenant = row[TENANT]
        try:
            if row is None or row["due_us"] != fired["due_us"]:
                return  # cancelled or moved since the scheduler saw it
            rm.delete(self.deadlines.name, **key)
            await self._step(event, rm, recorder, clock, past, (key["instance_id"], key["name"]))
        finally:
            rm.tenant = tenant

    async def _step(
        self,
        event: RecordedEvent,
        rm: ReadModel,
        recorder: Recorder,
        clock: Clock,
        past: bool,
        deadline: tuple[str, str] | None,
    ) -> None:
        """Handle ``event`` (or the fired ``deadline``: instance id, name) for its instance,
        in the scoped tenant."""
        if deadline is not None:
            instance, fired = deadline
            handler = self.deadline_handlers.get(fired)
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
        if ctx.commands or past:
            tenant = event.stream.tenant if rm.tenant is None else rm.tenant
            step = _Step(self, recorder, rm.store, event, ctx, past, tenant)
            state = await step.run(state)
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


class _Step:
    """Sends the commands of one handled event through the record, compensating rejections."""

    def __init__(
        self,
        saga: Saga[Any],
        recorder: Recorder,
        store: EventStore,
        event: RecordedEvent,
        ctx: SagaContext,
        past: bool,
        tenant: str,
    ) -> None:
        self.saga, self.recorder, self.store = saga, recorder, store
        self.tenant = tenant
        self.event, self.ctx, self.past = event, ctx, past
        self.record: dict[str, dict[str, Any]] = {}
        self.metadata = Metadata.caused_by(event)

    def _stamp(self, command: Command, command_id: str) -> Command:
        """``command`` with its derived id, its causation, in the instance's tenant."""
        if command.tenant not in ("", self.tenant):
            raise ValidationError(
                f"saga {self.saga.name}: an instance of tenant {self.tenant!r} sent a command "
                f"to tenant {command.tenant!r}",
                field="tenant",
            )
        metadata = Metadata.caused_by(self.event, command.metadata)
        return msgspec.structs.replace(
            command, command_id=command_id, metadata=metadata, tenant=self.tenant
        )

    async def _send(self, command: Command) -> Outcome:
        return await self.recorder.send(
            self.store,
            command,
            self.ctx.instance_id,
            self.event,
            past=self.past,
            record=self.record,
        )

    async def run(self, state: Any) -> Any:
        """Send (or replay from the record) the handler's commands, in order."""
        self.record = await self.recorder.recorded(self.store, self.event)
        key = f"{self.saga.name}:{self.ctx.instance_id}:{self.event.event_id}:"
        sent: set[str] = set()
        for i, command in enumerate(self.ctx.commands):
            outcome = await self._send(self._stamp(command, f"{key}{i}"))
            sent.add(f"{key}{i}")
            state = await self._settle(outcome, state)
        if self.past:  # recorded commands the handler no longer sends: the record wins
            for outcome in self.recorder.recorded_only(self.record, sent, key, self.metadata):
                state = await self._settle(outcome, state)
        return state

    async def _settle(self, outcome: Outcome, state: Any) -> Any:
        """Run ``on_rejected`` for a rejected command (its compensations recorded too)."""
        if outcome.kind != "rejected":
            return state
        saga, command = self.saga, outcome.command
        if saga.rejected is None:
            log.info("saga %s: %s rejected: %s", saga.name, command.type, outcome.detail)
            return state
        ctx = self.ctx
        undo = SagaContext(ctx.instance_id, self.event, ctx.clock)
        state = await _call(saga.rejected, state, command, outcome.detail, undo)
        for j, compensation in enumerate(undo.commands):
            comp = self._stamp(compensation, f"{command.command_id}:undo:{j}")
            again = await self._send(comp)
            if again.kind == "rejected":
                log.warning("saga %s: compensation rejected: %s", saga.name, again.detail)
        ctx.scheduled.update(undo.scheduled)
        for name in undo.cancelled:
            ctx.scheduled.pop(name, None)
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
