"""The DCB consistency scenario: concurrent conditional appends, then a check of the whole log.

In the style of the DCB benchmark suite (dcb.events): ``writers`` asyncio tasks (in one or
several processes sharing a database) loop for ``seconds``; each picks a query from a small
seeded universe (courses x students, items of one or two tags, type-only items, ``after=None``
username claims), reads it, takes the position of the last match read, and appends one or two
events the query matches with ``AppendCondition(query, after)``. Every attempt is recorded
(``Attempt``), and ``check_log`` then decides from ``read_all`` alone:

- violations: a successful append with an event its query matches positioned in
  (``after``, its first position): a match slipped in between the read and the append;
- false conflicts: an ``AppendConditionFailed`` naming no stored event its query matches
  after ``after`` (appends that did not overlap failed each other);
- misreported: a refusal whose position is not the first match after ``after`` or whose item
  is not the first item that event matches.

Used by tests/integration/test_dcb_consistency.py on every adapter; the benchmark may reuse it.
"""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import chronik
from chronik.dcb import AppendCondition, Query, QueryItem
from chronik.errors import AppendConditionFailed
from chronik.messages import EventData, Position, RecordedEvent
from chronik.store.base import EventStore

__all__ = [
    "Attempt",
    "Choice",
    "ScenarioReport",
    "Universe",
    "check_log",
    "dcb_missing",
    "run_in_processes",
    "run_writers",
]

SUBSCRIBED, UPDATED, CAPACITY, CLAIMED = (
    "student.subscribed",
    "course.updated",
    "course.capacity_changed",
    "username.claimed",
)


class Choice(NamedTuple):
    """One iteration's query and the events (type, tags) it appends; ``claim``: after=None."""

    query: Query
    events: tuple[tuple[str, tuple[str, ...]], ...]
    claim: bool = False


@dataclass(frozen=True)
class Universe:
    """The seeded universe of queries: ``courses`` x ``students`` tags, ``names`` usernames."""

    courses: int = 8
    students: int = 16
    names: int = 64

    def choose(self, rng: random.Random) -> Choice:
        """A random query and events that it matches (so concurrent picks overlap or not)."""
        c = f"course:c{rng.randrange(self.courses)}"
        s = f"student:s{rng.randrange(self.students)}"
        kind = rng.random()
        extra: tuple[tuple[str, tuple[str, ...]], ...]
        if kind < 0.3:  # one tag
            extra = ((SUBSCRIBED, (c, s)),) if rng.random() < 0.5 else ()
            return Choice(Query([QueryItem(tags=[c])]), ((UPDATED, (c,)), *extra))
        if kind < 0.55:  # one type, two tags
            return Choice(Query([QueryItem([SUBSCRIBED], [c, s])]), ((SUBSCRIBED, (c, s)),))
        if kind < 0.8:  # two items (the course's and the student's events)
            extra = ((UPDATED, (s,)),) if rng.random() < 0.5 else ()
            query = Query([QueryItem(tags=[c]), QueryItem(tags=[s])])
            return Choice(query, ((SUBSCRIBED, (c, s)), *extra))
        if kind < 0.9:  # type only
            return Choice(Query([QueryItem([CAPACITY])]), ((CAPACITY, (c,)),))
        name = f"username:u{rng.randrange(self.names)}"  # uniqueness claim, after=None
        return Choice(Query([QueryItem([CLAIMED], [name])]), ((CLAIMED, (name,)),), claim=True)


class Attempt(NamedTuple):
    """One conditional append: its query, ``after``, event ids, and either its positions
    (success) or the refusal's position and item (AppendConditionFailed); who made it."""

    query: Query
    after: Position | None
    event_ids: tuple[str, ...]
    positions: tuple[Position, ...] = ()
    refused_at: Position | None = None
    refused_item: int | None = None
    writer: str = ""


@dataclass
class ScenarioReport:
    """What ``check_log`` found, with the figures of the run."""

    attempts: int
    appended: int
    conflicts: int
    events: int
    seconds: float
    violations: list[str] = field(default_factory=list)
    false_conflicts: list[str] = field(default_factory=list)
    misreported: list[str] = field(default_factory=list)

    @property
    def appends_per_second(self) -> float:
        """Successful conditional appends per second of the run."""
        return self.appended / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """One line of figures, e.g. for ``-s`` output and reports."""
        return (
            f"{self.attempts} attempts, {self.appended} appended "
            f"({self.appends_per_second:.0f}/s), {self.conflicts} conflicts, {self.events} "
            f"events; {len(self.violations)} violations, {len(self.false_conflicts)} false "
            f"conflicts, {len(self.misreported)} misreported"
        )


async def dcb_missing(store: EventStore) -> str | None:
    """None when ``store`` (a throwaway, empty store) checks append conditions, else why not.

    Tests of adapters still being given DCB skip with this reason; the skip goes once the
    adapter lands.
    """
    first = EventData("probe.made", tags=["probe:1"])
    await store.append_tagged([first])
    try:
        await store.append_tagged(
            [EventData("probe.made", tags=["probe:1"])],
            AppendCondition(Query([QueryItem(tags=["probe:1"])])),
        )
    except AppendConditionFailed:
        pass
    else:
        return f"{type(store).__name__} does not check DCB append conditions yet"
    found = [e async for e in store.read_query(Query([QueryItem(tags=["probe:1"])]))]
    if [(e.event_id, e.tags) for e in found] != [(first.event_id, ("probe:1",))]:
        return f"{type(store).__name__} does not read tagged events by query yet"
    return None


async def _last_match(
    store: EventStore, query: Query, known: Position | None, incremental: bool
) -> Position | None:
    """The position of the last event ``query`` matches: read forward from ``known`` (a
    writer's cached position) or backward for the newest match."""
    if incremental and known is not None:
        last = known
        async for event in store.read_query(query, after=known):
            last = event.position
        return last
    async for event in store.read_query(query, backward=True, limit=1):
        return event.position
    return None


async def _writer(
    store: EventStore,
    rng: random.Random,
    universe: Universe,
    until: float,
    name: str,
    out: list[Attempt],
) -> None:
    known: dict[str, Position | None] = {}
    while time.monotonic() < until:
        choice = universe.choose(rng)
        query = choice.query
        after: Position | None = None
        if not choice.claim:
            key = str(query)
            after = await _last_match(store, query, known.get(key), rng.random() < 0.5)
            known[key] = after
        await asyncio.sleep(rng.random() * 0.002)  # widen the window between read and append
        events = [EventData(t, {"by": name}, tags=list(tags)) for t, tags in choice.events]
        ids = tuple(e.event_id for e in events)
        try:
            result = await store.append_tagged(events, AppendCondition(query, after))
        except AppendConditionFailed as err:
            refused = _position(err.position)
            out.append(Attempt(query, after, ids, (), refused, err.item, name))
        else:
            out.append(Attempt(query, after, ids, tuple(result.positions), writer=name))


def _position(value: object) -> Position:
    return value if isinstance(value, Position) else Position.parse(str(value))


async def run_writers(
    store: EventStore,
    *,
    writers: int = 20,
    seconds: float = 2.0,
    seed: int = 0,
    universe: Universe | None = None,
    name: str = "w",
    start_at: float | None = None,
) -> list[Attempt]:
    """Run ``writers`` concurrent writers on ``store`` for ``seconds`` (from the wall-clock
    ``start_at`` when given, so processes start together) and return every attempt."""
    universe = universe or Universe()
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    until = time.monotonic() + seconds
    out: list[Attempt] = []
    await asyncio.gather(
        *(
            _writer(store, random.Random(f"{seed}/{name}{i}"), universe, until, f"{name}{i}", out)
            for i in range(writers)
        )
    )
    return out


def _process_main(
    url: str, writers: int, seconds: float, seed: int, name: str, start_at: float
) -> list[Attempt]:
    async def main() -> list[Attempt]:
        async with chronik.open_store(url) as store:
            return await run_writers(
                store, writers=writers, seconds=seconds, seed=seed, name=name, start_at=start_at
            )

    return asyncio.run(main())


async def run_in_processes(
    url: str,
    *,
    processes: int = 2,
    writers: int = 20,
    seconds: float = 2.0,
    seed: int = 0,
    startup: float = 3.0,
) -> list[Attempt]:
    """The writers split over ``processes`` spawned processes sharing the database at ``url``
    (they start together, ``startup`` seconds from now); every attempt of every process."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + startup
    share = [writers // processes + (1 if i < writers % processes else 0) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            asyncio.wrap_future(
                pool.submit(_process_main, url, n, seconds, seed, f"p{i}w", start_at)
            )
            for i, n in enumerate(share)
        ]
        results = await asyncio.gather(*futures)
    return [a for r in results for a in r]


async def check_log(
    store: EventStore, attempts: Sequence[Attempt], seconds: float
) -> ScenarioReport:
    """Check ``attempts`` against the whole log of ``store`` (see the module docstring)."""
    log = [e async for e in store.read_all()]
    index = {e.position: i for i, e in enumerate(log)}
    matches = _Matches(log)
    report = ScenarioReport(
        attempts=len(attempts),
        appended=sum(1 for a in attempts if a.positions),
        conflicts=sum(1 for a in attempts if a.refused_at is not None),
        events=len(log),
        seconds=seconds,
    )
    for n, a in enumerate(attempts):
        start = -1 if a.after is None else index.get(a.after)
        if start is None:
            report.violations.append(f"attempt {n}: after={a.after} names no stored event")
            continue
        hits = matches.of(a.query)
        first = bisect.bisect_right(hits, start)  # the first match after `after`
        if a.positions:
            own = [index.get(p) for p in a.positions]
            if None in own or [log[i].event_id for i in own if i is not None] != list(a.event_ids):
                report.violations.append(f"attempt {n}: positions {a.positions} not its events")
                continue
            mine = min(i for i in own if i is not None)
            if first < len(hits) and hits[first] < mine:
                slipped = log[hits[first]]
                report.violations.append(
                    f"attempt {n}: {a.query} after {a.after} appended at {log[mine].position}, "
                    f"but {slipped.type}{list(slipped.tags)} at {slipped.position} matched"
                )
        elif a.refused_at is not None:
            at = index.get(a.refused_at)
            if at is None or at <= start or not a.query.matches(log[at]):
                report.false_conflicts.append(
                    f"attempt {n}: {a.query} after {a.after} refused naming {a.refused_at}, "
                    "no match stored there"
                )
            elif hits[first] != at or a.query.first_item(log[at]) != a.refused_item:
                report.misreported.append(
                    f"attempt {n}: refused naming item {a.refused_item} at {a.refused_at}, "
                    f"first match is item {a.query.first_item(log[hits[first]])} at "
                    f"{log[hits[first]].position}"
                )
    return report


class _Matches:
    """Indexes into the log of the events each query matches, by a tag index."""

    def __init__(self, log: list[RecordedEvent]) -> None:
        self.log = log
        self.by_tag: dict[str, list[int]] = {}
        for i, event in enumerate(log):
            for tag in event.tags:
                self.by_tag.setdefault(tag, []).append(i)
        self.cache: dict[str, list[int]] = {}

    def of(self, query: Query) -> list[int]:
        key = str(query)
        hit = self.cache.get(key)
        if hit is None:
            found: set[int] = set()
            for item in query.items:
                if item.tags:
                    candidates: Sequence[int] = min(
                        (self.by_tag.get(t, []) for t in item.tags), key=len
                    )
                else:
                    candidates = range(len(self.log))
                found.update(i for i in candidates if item.matches(self.log[i]))
            hit = self.cache[key] = sorted(found)
        return hit
