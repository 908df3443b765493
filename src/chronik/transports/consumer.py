"""The consumer loop shared by every transport: fetch, run handlers, ack, retry, dead-letter.

Deliveries with the same ordering key run one after the other (a lane per key); different keys
and unkeyed messages run concurrently up to ``concurrency``. A failing handler is retried with
backoff inside its lane, so only its own key waits; after the policy's retries the message is
dead-lettered (or parks its key, or stops the consumer). A broker outage never ends the loop:
it backs off and fetches again once the adapter has reconnected.

It runs on the adapter's ``Source`` (``chronik.transports.source``) and imports no transport:
``Transport`` in ``chronik.transports.base`` builds consumers and is only a type here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

from chronik.errors import ConsumerStopped, TransportUnavailable
from chronik.transports.dead_letters import ONLY_GROUP, for_group
from chronik.transports.message import Delivery, FailurePolicy, Handler, Message
from chronik.transports.source import Incoming, Source

if TYPE_CHECKING:
    from chronik.transports.base import Transport
    from chronik.transports.parks import Parks

__all__ = ["Consumer"]

log = logging.getLogger("chronik.transports")
_Item = Incoming | str  # an unkeyed delivery, or the key of a lane that has work


class Consumer:
    """A running consumer of one group (or queue); ``await consumer.stop()`` ends it.

    ``acked`` and ``dead_lettered`` count what it has done; ``error`` is set when its failure
    policy stopped it, and ``wait()`` then raises ConsumerStopped.
    """

    def __init__(
        self,
        transport: Transport,
        source: Source,
        handler: Handler,
        policy: FailurePolicy,
        *,
        concurrency: int,
        prefetch: int,
        kind: Literal["topic", "queue"],
        name: str,
        group: str,
        dead_letter_queue: str,
        parks: Parks | None = None,
    ) -> None:
        self.transport = transport
        self.parks = parks  # the group's parked keys, seen by all its consumers
        self.source = source
        self.handler = handler
        self.policy = policy
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.kind = kind
        self.name = name
        self.group = group
        self.dead_letter_queue = dead_letter_queue
        self.acked = 0
        self.dead_lettered = 0
        self.error: ConsumerStopped | None = None
        self._ready: asyncio.Queue[_Item] = asyncio.Queue()
        self._lanes: dict[str, collections.deque[Incoming]] = {}
        self._parked: set[str] = set()
        self._inflight: dict[int, Incoming] = {}
        self._handling: dict[int, Incoming] = {}
        self._idle = asyncio.Event()  # set when the last running handler returned
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        state = "stopped" if self._done.is_set() else "running"
        where = f"{self.name}/{self.group}" if self.kind == "topic" else self.name
        return f"<Consumer {self.kind} {where} {state} acked={self.acked}>"

    @property
    def running(self) -> bool:
        """True until the consumer stopped."""
        return not self._done.is_set()

    def start(self) -> None:
        """Start the fetch loop and the workers (called by the transport)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._fetch_loop())]
        self._tasks += [loop.create_task(self._worker()) for _ in range(self.concurrency)]
        if self.source.touch_interval is not None:
            self._tasks.append(loop.create_task(self._heartbeat(self.source.touch_interval)))

    async def stop(self, grace: float = 0.0) -> None:
        """Stop fetching and handling; unacknowledged messages go back for redelivery.

        With ``grace`` seconds, handlers already running may finish (and ack) first.
        """
        if self._done.is_set():
            return
        self._stopping = True
        if grace > 0 and self._handling:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(BaseException):
                    await task
        # close first (no fetch may still be pending at the broker), then give messages back
        with contextlib.suppress(Exception):
            await self.source.close()
        if self.parks is not None:  # a park holds while its consumer runs
            await self.parks.close()
        for incoming in list(self._inflight.values()):
            with contextlib.suppress(Exception):
                await self.source.release(incoming)
        self._inflight.clear()
        self.transport._forget(self)
        self._done.set()

    async def wait(self) -> None:
        """Return when the consumer stopped; raise ConsumerStopped if its policy stopped it."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- fetching ------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        pause = 0.05
        while not self._stopping:
            room = self.prefetch - len(self._inflight)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                batch = await self.source.fetch(min(room, 256), 1.0)
            except asyncio.CancelledError:
                raise
            except TransportUnavailable as exc:
                log.info("%r: broker unavailable (%s); retrying in %.2fs", self, exc, pause)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            except Exception:
                log.exception("%r: fetch failed; retrying in %.2fs", self, pause)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            pause = 0.05
            for incoming in batch:
                self._inflight[id(incoming)] = incoming
                key = incoming.message.key
                if key is None:
                    self._ready.put_nowait(incoming)
                elif key in self._lanes:
                    self._lanes[key].append(incoming)
                else:
                    self._lanes[key] = collections.deque([incoming])
                    self._ready.put_nowait(key)

    async def _worker(self) -> None:
        while True:
            item = await self._ready.get()
            if isinstance(item, Incoming):
                await self._process(item)
                continue
            lane = self._lanes[item]
            while lane:
                await self._process(lane[0])
                lane.popleft()
            del self._lanes[item]

    async def _heartbeat(self, interval: float) -> None:
        """Keep the messages whose handlers are still running from going back to the broker."""
        seen: set[int] = set()
        while True:
            await asyncio.sleep(interval)
            for key, incoming in list(self._handling.items()):
                if key in seen:  # running since the last beat at least
                    with contextlib.suppress(Exception):
                        await self.source.touch(incoming)
            seen = set(self._handling)

    def _handled(self, incoming: Incoming) -> None:
        del self._handling[id(incoming)]
        if not self._handling:
            self._idle.set()

    def _finished(self, incoming: Incoming) -> None:
        self._inflight.pop(id(incoming), None)
        self._room.set()

    # --- one message ---------------------------------------------------------------------------

    async def _process(self, incoming: Incoming) -> None:
        if self._stopping:
            return
        if ONLY_GROUP in incoming.message.headers and not for_group(incoming, self.group):
            with contextlib.suppress(TransportUnavailable):  # a retried dead letter of
                await self.source.ack(incoming)  # another group (NATS): not ours
            self._finished(incoming)
            return
        policy = self.policy
        key = incoming.message.key
        parked, elsewhere = key is not None and key in self._parked, False
        if key is not None and not parked and self.parks is not None:
            try:  # parked by another consumer of the group (recorded before its ack)
                parked = elsewhere = await self.parks.parked(key)
            except TransportUnavailable as exc:  # ask again when it comes back
                log.info("%r: parks unavailable (%s)", self, exc)
                with contextlib.suppress(Exception):
                    await self.source.release(incoming)
                self._finished(incoming)
                return
        if parked:
            reason = f"parked: an earlier message of key {key!r} failed"
            await self._give_up(incoming, reason, incoming.attempt, parks=not elsewhere)
            return
        attempt = incoming.attempt
        limit = policy.retries + 1
        if attempt > limit:
            await self._give_up(incoming, f"delivered {attempt} times, more than {limit}", attempt)
            return
        while True:
            self._handling[id(incoming)] = incoming
            self._idle.clear()
            try:
                await self.handler(Delivery(incoming.message, attempt, self.group))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._handled(incoming)
                if attempt >= limit:
                    await self._give_up(incoming, f"{type(exc).__name__}: {exc}", attempt)
                    return
                log.debug(
                    "%r: handler failed on %s (attempt %d)", self, incoming.message.id, attempt
                )
                with contextlib.suppress(Exception):
                    await self.source.touch(incoming)
                await asyncio.sleep(policy.delay(attempt))
                attempt += 1
                continue
            break
        try:
            await self.source.ack(incoming)
            self.acked += 1
        except TransportUnavailable as exc:  # the broker will redeliver it: at least once
            log.info("%r: ack of %s failed (%s)", self, incoming.message.id, exc)
        self._finished(incoming)
        self._handled(incoming)  # after the ack: a graceful stop waits for it

    async def _give_up(
        self, incoming: Incoming, reason: str, attempts: int, *, parks: bool = True
    ) -> None:
        """Dead-letter (or park with, or stop on) ``incoming``; ``parks``: a park by this
        consumer's policy (not one it found recorded by another consumer)."""
        message = incoming.message
        if self.policy.then == "stop":  # stop() gives the message back
            self._stopping = True
            self.error = ConsumerStopped(f"{self!r} stopped on message {message.id}: {reason}")
            asyncio.get_running_loop().create_task(self.stop())
            return
        key = message.key
        if parks and self.policy.then == "park" and key is not None:
            self._parked.add(key)
        dead = Message(
            topic=self.dead_letter_queue,
            body=message.body,
            id=message.id,
            key=message.key,
            headers={
                **message.headers,
                "dead-topic": message.topic,
                "dead-group": self.group,
                "dead-reason": _printable(reason)[:2000],
                "dead-attempts": str(attempts),
                "dead-at": f"{time.time():.3f}",
            },
        )
        try:
            if self.parks is not None and key in self._parked and key not in self.parks.mine:
                await self.parks.park(key)  # before the ack: the key's next message sees it
            await self.transport._send_dead_letter(dead)
            await self.source.ack(incoming)
            self.dead_lettered += 1
        except TransportUnavailable as exc:  # redelivered later, and dead-lettered then
            log.info("%r: dead-lettering %s failed (%s)", self, message.id, exc)
            with contextlib.suppress(Exception):
                await self.source.release(incoming)
        log.warning("%r: dead-lettered %s: %s", self, message.id, reason)
        self._finished(incoming)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)
