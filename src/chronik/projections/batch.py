"""One page of events through a projection's handlers: the writes to commit, where it ends.

Handlers run in order, so per-stream order holds. A handler that raises is retried as the
projection's ``ErrorPolicy`` says; one that keeps failing is skipped, parks its stream (its
event and every later one of the stream become dead letters) or stops the page before it. An
error of ``TRANSIENT_ERRORS`` (the infrastructure is down, not the event bad) is raised
instead, so the page is retried whole, later. The processor commits what this returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

from chronik.errors import ServiceUnavailable, StoreClosed, StoreUnavailable, TransportUnavailable
from chronik.messages import Position, RecordedEvent
from chronik.projections import dead_letters
from chronik.projections.projection import Handler, Projection
from chronik.projections.readmodel import ReadModel
from chronik.store.base import TableWrite

__all__ = ["TRANSIENT_ERRORS", "Handled", "handle", "refused", "retry"]

#: What a handler raises when the infrastructure is down, not the event bad: the whole page is
#: left uncommitted and retried by the processor's loop (with backoff, for as long as it takes)
#: instead of using up the policy's retries and parking a good event.
TRANSIENT_ERRORS: Final = (StoreUnavailable, StoreClosed, ServiceUnavailable, TransportUnavailable)

#: What the processor is told before a handler is retried: the error (as last_error), and
#: whether it is the first retry of the event (it then commits its status: state failing).
Failing = Callable[[str, bool], Awaitable[None]]


def _never(event: RecordedEvent, rm: ReadModel) -> None:
    """The handler before the first event's is looked up (never called)."""
    raise AssertionError("no handler looked up")


class Handled(NamedTuple):
    """What a page left to commit."""

    writes: list[TableWrite]  # the handlers' rows, then the dead letters
    position: Position | None  # the checkpoint: the page's end, or before the event that stops
    parked: set[str]  # the lane's parked streams from now on
    error: str | None  # the last handler error of the page (last_error), if any
    stopped: bool  # the policy stopped the projection at ``error``


async def handle(
    p: Projection,
    page: list[RecordedEvent],
    rm: ReadModel,
    before: Position | None,
    parked: set[str],
    where: tuple[str, int],
    failing: Failing,
    stopping: Callable[[], bool],
) -> Handled:
    """Run the handlers of a page into ``rm`` (the lane was at ``before``, with ``parked``
    streams; ``where`` = (key, partition)); a failing handler is retried through ``retry``."""
    key, partition = where
    generation = rm.generation
    dead: list[TableWrite] = []
    position: Position | None = page[-1].position
    error: str | None = None
    parked = set(parked)
    handlers = p.handlers
    split = p.partitions > 1
    query = p.query
    sift = split or query is not None or bool(parked)  # else every event is handled
    writes = rm.writes
    etype: str | None = None  # the type of the previous event (a page is mostly of one type)
    fn: Handler = _never
    is_async = False
    for i, e in enumerate(page):
        if sift:
            if split and p.partition_of(e.stream) != partition:
                continue  # another partition's event
            if query is not None and not query.matches(e):
                continue  # of a handled type, but not what the projection's query follows
            if parked and str(e.stream) in parked:
                dead.append(dead_letters.park(key, generation, e, None, 0, blocked=True))
                continue
        if e.type is not etype:
            etype = e.type
            fn, is_async = handlers[etype]
        rm.event, mark = e, len(writes)  # rm.begin(e), inline (rm.mark: when it fails)
        try:
            if is_async:
                await fn(e, rm)  # type: ignore[misc]
            else:
                fn(e, rm)
        except Exception as exc:
            sift = True  # the event's stream may be parked now
            rm.mark = mark
            rm.discard()
            failed = await retry(p, e, rm, exc, failing, stopping)
            if failed is None:
                continue
            then = p.policy.then
            error = f"{e.type} {e.event_id} ({e.stream}): {failed}"
            if then == "stop":
                position = page[i - 1].position if i else before
                return Handled(rm.writes + dead, position, parked, error, True)
            if then == "park":
                parked.add(str(e.stream))
                dead.append(dead_letters.park(key, generation, e, failed, p.policy.retries + 1))
    return Handled(rm.writes + dead, position, parked, error, False)


async def retry(
    p: Projection,
    event: RecordedEvent,
    rm: ReadModel,
    first: Exception,
    failing: Failing,
    stopping: Callable[[], bool],
) -> str | None:
    """Retry a failed handler as the policy says; the error text if it kept failing. An error
    of TRANSIENT_ERRORS is raised instead (the page is retried whole, later)."""
    if isinstance(first, TRANSIENT_ERRORS):
        raise first
    policy = p.policy
    exc: Exception = first
    for attempt in range(1, policy.retries + 2):
        error = f"{type(exc).__name__}: {exc}"
        if attempt > policy.retries or stopping():
            return error
        await failing(f"{event.type} {event.event_id} ({event.stream}): {error}", attempt == 1)
        await asyncio.sleep(policy.delay(attempt))
        rm.begin(event)
        try:
            await p.handle(event, rm)
        except Exception as again:
            rm.discard()
            if isinstance(again, TRANSIENT_ERRORS):
                raise
            exc = again
        else:
            rm.keep()
            return None
    raise AssertionError("unreachable")


def refused(
    p: Projection,
    event: RecordedEvent,
    exc: Exception,
    where: tuple[str, int],
    generation: int,
    parked: set[str],
) -> Handled:
    """What a page of one event whose writes the database refused leaves to commit: as the
    policy says, nothing (skip), its dead letter (park), or a stop before it."""
    key, _ = where
    error = f"{type(exc).__name__}: {exc}"
    message = f"{event.type} {event.event_id} ({event.stream}): {error}"
    parked = set(parked)
    dead: list[TableWrite] = []
    if p.policy.then == "park":
        parked.add(str(event.stream))
        dead = [dead_letters.park(key, generation, event, error, 1)]
    return Handled(dead, event.position, parked, message, p.policy.then == "stop")
