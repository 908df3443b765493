"""Health of one process: supervised background tasks, event-loop lag, the store's writer.

Every background task chronik starts (projection processors, the outbox dispatcher, the
deadline scheduler, the HTTP server, ...) is registered with the process's ``Supervisor``,
which records its state: ``running``, ``restarting`` (it crashed and runs again after a
backoff), ``dead`` (it crashed and is not restarted, with the exception) or ``stopped`` (it was
stopped on purpose). A monitor task measures how late the event loop wakes it up (loop lag).

``problems()`` is what ``/readyz`` lists (anything that is not as it should be);
``fatal()`` is what makes ``/healthz`` fail (the process cannot make progress: the loop is
blocked for long, a vital task is dead, the store's writer is wedged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = [
    "STATES",
    "Supervisor",
    "TaskInfo",
    "horizon_lag",
    "horizon_problems",
    "store_problem",
]

log = logging.getLogger("chronik.health")
STATES: Final = ("running", "restarting", "dead", "stopped")
LOOP_LAG_LIMIT: Final = 5.0  # seconds the loop may be late before the process is not live
LAG_INTERVAL: Final = 0.25
LAG_WINDOW: Final = 10.0  # a lag over the limit counts this long after it was seen
WEDGED_AFTER: Final = 120.0  # a writer failing this long (no write went through) is wedged
HORIZON_LIMIT: Final = 30.0  # events held back by a transaction this old: not ready


class TaskInfo:
    """What the supervisor knows of one background task."""

    def __init__(self, name: str, vital: bool) -> None:
        self.name = name
        self.vital = vital
        self.state = "running"
        self.error: str | None = None
        self.restarts = 0
        self.since = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    def _set(self, state: str, error: str | None = None) -> None:
        self.state, self.since = state, time.monotonic()
        if error is not None or state == "running":
            self.error = error if error is not None else self.error

    def __repr__(self) -> str:
        return f"<TaskInfo {self.name} {self.state}>"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """The registry of a process's background tasks, and its event-loop lag monitor."""

    def __init__(
        self,
        *,
        loop_lag_limit: float = LOOP_LAG_LIMIT,
        lag_interval: float = LAG_INTERVAL,
        lag_window: float = LAG_WINDOW,
        max_backoff: float = 5.0,
    ) -> None:
        self.tasks: dict[str, TaskInfo] = {}
        self.loop_lag_limit = loop_lag_limit
        self.lag_interval = lag_interval
        self.lag_window = lag_window
        self.max_backoff = max_backoff
        self._tick = time.monotonic()
        self._lag = 0.0
        self._worst = (0.0, 0.0)  # (lag, when) of the worst lag within the window
        self._monitor: asyncio.Task[None] | None = None
        self._checks: dict[str, Callable[[], list[str]]] = {}

    # --- registering ------------------------------------------------------------------------

    def supervise(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        vital: bool = True,
        restart: bool = True,
        backoff: float = 0.5,
    ) -> TaskInfo:
        """Run ``run()`` in a task; when it raises (anything but a cancel), record the error
        and, with ``restart``, run it again after a backoff (doubling up to ``max_backoff``),
        else mark it dead. Returning normally means it is done (``stopped``)."""
        info = self.tasks[name] = TaskInfo(name, vital)

        async def loop() -> None:
            delay = backoff
            while True:
                started = time.monotonic()
                try:
                    await run()
                except asyncio.CancelledError:
                    info._set("stopped")
                    raise
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt | SystemExit):
                        raise
                    log.error("background task %s crashed: %s", name, _describe(exc))
                    if not restart:
                        info._set("dead", _describe(exc))
                        return
                    if time.monotonic() - started > 10 * delay:
                        delay = backoff  # it ran for a while: start the backoff over
                    info.restarts += 1
                    info._set("restarting", _describe(exc))
                    await asyncio.sleep(delay)
                    delay = min(self.max_backoff, delay * 2)
                    info._set("running")
                else:
                    info._set("stopped")
                    return

        info.task = asyncio.get_running_loop().create_task(loop(), name=f"chronik {name}")
        return info

    def watch(self, name: str, task: asyncio.Task[None], *, vital: bool = True) -> TaskInfo:
        """Follow a task started elsewhere: it is dead if it ends with an exception or ends
        at all before ``stopping(name)`` was called."""
        info = self.tasks[name] = TaskInfo(name, vital)
        info.task = task

        def done(t: asyncio.Task[None]) -> None:
            if info.state == "stopped" or info.task is not t:
                return
            if t.cancelled():
                info._set("dead", "cancelled")
            elif (exc := t.exception()) is not None:
                log.error("background task %s died: %s", name, _describe(exc))
                info._set("dead", _describe(exc))
            else:
                info._set("dead", "ended")

        task.add_done_callback(done)
        return info

    def stopping(self, name: str) -> None:
        """Say that a task is being stopped on purpose (its end is no problem)."""
        info = self.tasks.get(name)
        if info is not None:
            info._set("stopped")

    async def stop_task(self, name: str, grace: float = 5.0) -> None:
        """Stop one task on purpose: say so, cancel it, wait for it at most ``grace`` s."""
        self.stopping(name)
        info = self.tasks.get(name)
        if info is not None and info.task is not None and not info.task.done():
            info.task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(info.task, return_exceptions=True)

    def forget(self, name: str) -> None:
        """Drop a task from the registry."""
        self.tasks.pop(name, None)

    def add_check(self, name: str, check: Callable[[], list[str]]) -> None:
        """A named function whose problems ``problems()`` lists too (e.g. projections)."""
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        """Drop a check added with ``add_check``."""
        self._checks.pop(name, None)

    # --- the loop lag monitor ---------------------------------------------------------------

    def start(self) -> None:
        """Start the event-loop lag monitor (idempotent; needs a running loop)."""
        if self._monitor is None or self._monitor.done():
            self._tick = time.monotonic()
            loop = asyncio.get_running_loop()
            self._monitor = loop.create_task(self._measure(), name="chronik loop-lag")

    async def _measure(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.lag_interval)
            self._note(time.monotonic() - self._tick - self.lag_interval)

    def _note(self, lag: float) -> None:
        now = time.monotonic()
        self._lag = max(0.0, lag)
        if self._lag >= self._worst[0] or now - self._worst[1] > self.lag_window:
            self._worst = (self._lag, now)

    @property
    def loop_lag(self) -> float:
        """How late the loop is now, or was at worst within the lag window (seconds)."""
        if self._monitor is None or self._monitor.done():
            return 0.0
        now = time.monotonic()
        overdue = max(0.0, now - self._tick - self.lag_interval)
        worst = self._worst[0] if now - self._worst[1] <= self.lag_window else self._lag
        return max(overdue, worst)

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel the supervised tasks and the monitor, waiting at most ``grace`` s."""
        tasks = [i.task for i in self.tasks.values() if i.task is not None and not i.task.done()]
        tasks = [t for t in tasks if t is not None]
        for info in self.tasks.values():
            if info.state in ("running", "restarting"):
                info._set("stopped")
        if self._monitor is not None:
            tasks.append(self._monitor)
            self._monitor = None
        for t in tasks:
            t.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*tasks, return_exceptions=True)

    # --- verdicts ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        out = dict.fromkeys(STATES, 0)
        for info in self.tasks.values():
            out[info.state] += 1
        return out

    def fatal(self, store: EventStore | None = None) -> list[str]:
        """Why the process cannot make progress (``/healthz`` fails): empty when it can."""
        out = []
        lag = self.loop_lag
        if lag > self.loop_lag_limit:
            out.append(f"event loop blocked: {lag:.1f} s late (limit {self.loop_lag_limit:g} s)")
        for info in self.tasks.values():
            if info.vital and info.state == "dead":
                out.append(f"task {info.name}: dead ({info.error})")
        if store is not None:
            problem = store_problem(store, wedged_only=True)
            if problem is not None:
                out.append(problem)
        return out

    def problems(self, store: EventStore | None = None) -> list[str]:
        """Everything that is not as it should be (``/readyz`` lists them)."""
        out = [p for p in self.fatal() if p.startswith("event loop")]
        for info in self.tasks.values():
            if info.state == "dead":
                out.append(f"task {info.name}: dead ({info.error})")
            elif info.state == "restarting":
                out.append(f"task {info.name}: restarting after {info.error}")
        if store is not None:
            problem = store_problem(store)
            if problem is not None:
                out.append(problem)
        for check in self._checks.values():
            out += check()
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)
        return f"<Supervisor {counts or 'no tasks'}>"


def store_problem(
    store: EventStore, wedged_only: bool = False, wedged_after: float = WEDGED_AFTER
) -> str | None:
    """What the store says is wrong with its writer (``store.health``), or None; with
    ``wedged_only``, only a writer failing for longer than ``wedged_after`` s (wedged)."""
    health = store.health
    if health.ok:
        return None
    if wedged_only:
        if health.since is None or time.time() - health.since < wedged_after:
            return None
        return f"store writer wedged for {time.time() - health.since:.0f} s: {health.detail}"
    return f"store: {health.detail}"


async def horizon_problems(store: EventStore, limit: float = HORIZON_LIMIT) -> list[str]:
    """A store whose readers are held back by a running transaction (PostgreSQL's safe
    horizon) for longer than ``limit`` s: events committed but delivered to nobody."""
    lag = await horizon_lag(store)
    if lag is None or not lag.pending_events:
        return []
    age = lag.oldest_transaction_seconds or 0.0
    if age < limit:
        return []
    return [
        f"store: {lag.pending_events} committed events held back for {age:.0f} s by a "
        "running transaction (horizon); end it (pg_terminate_backend) to let readers go on"
    ]


async def horizon_lag(store: EventStore) -> Any:
    """The store's HorizonLag (PostgreSQL), or None for stores without a horizon."""
    measure = getattr(store, "horizon_lag", None)  # only PostgreSQL has a safe horizon
    if measure is None:
        return None
    try:
        async with asyncio.timeout(2):
            return await measure()
    except Exception:  # the store is down: readyz says so elsewhere
        return None
