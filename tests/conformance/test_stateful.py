"""Hypothesis drives memory and SQLite stores with random operations against a plain model:
stream appends, units and retries, and DCB (tagged appends with and without conditions, query
reads, units with ``tx.append_tagged`` + ``tx.expect``, retries of committed tagged appends)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import chronik
from chronik.store.base import EventStore
from chronik.testing.conformance_state import collect

STREAMS = [chronik.StreamId("acct", f"a{i}") for i in range(3)]
expectations = st.one_of(
    st.sampled_from([chronik.ANY, chronik.NO_STREAM, chronik.STREAM_EXISTS]),
    st.integers(min_value=0, max_value=6),
)
TAGS = ["a:1", "a:2", "b:1"]
TYPES = ["acct.changed", "t.x", "t.y"]  # stream events are acct.changed, untagged
tag_sets = st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
tagged_specs = st.lists(st.tuples(st.sampled_from(TYPES[1:]), tag_sets), min_size=1, max_size=3)
#: a query as plain data: items of (types, tags)
queries = st.lists(
    st.tuples(st.lists(st.sampled_from(TYPES), max_size=2, unique=True), tag_sets),
    min_size=1,
    max_size=3,
)
#: None, or an index (modulo) into the positions stored so far
afters = st.one_of(st.none(), st.integers(0, 1000))
conditions = st.one_of(st.none(), st.tuples(queries, afters))
ModelQuery = list[tuple[list[str], list[str]]]


def allowed(expected: chronik.Expected, version: int | None) -> bool:
    """The model's rule for an expectation."""
    if expected is chronik.ANY:
        return True
    if expected is chronik.NO_STREAM:
        return version is None
    if expected is chronik.STREAM_EXISTS:
        return version is not None
    return version == expected


class StoreMachine(RuleBasedStateMachine):
    """The store behaves like a dict of lists plus one global list."""

    url = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp()
        self.model: dict[chronik.StreamId, list[int]] = {s: [] for s in STREAMS}
        self.global_order: list[int] = []
        self.sent: list[tuple[chronik.StreamId, list[chronik.EventData], chronik.AppendResult]] = []
        self.counter = 0
        self.positions: list[chronik.Position] = []  # beside global_order
        self.info: dict[int, tuple[str, tuple[str, ...]]] = {}  # n -> (type, sorted tags)
        self.retries: list[tuple[Callable[[], Awaitable[Any]], Any]] = []  # DCB calls, results
        self.dcb = False

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def open_store(self) -> None:
        url = self.url.replace("{tmp}", self.tmp)
        self.store: EventStore = self.run(chronik.open_store(url).open())
        self.dcb = self.probe_dcb()
        assert self.dcb, f"{url} does not check append conditions"

    def probe_dcb(self) -> bool:
        """Whether the store checks append conditions (its events go into the model)."""
        first = self.tagged_batch([("t.x", ["a:1"])])
        self.record(first, self.run(self.store.append_tagged(first)).positions)
        second = self.tagged_batch([("t.x", ["a:1"])])
        cond = chronik.AppendCondition(chronik.Query.of(tags=["a:1"]))
        try:
            result = self.run(self.store.append_tagged(second, cond))
        except chronik.AppendConditionFailed:
            return True
        self.record(second, result.positions)
        return False

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def batch(self, size: int) -> list[chronik.EventData]:
        out = []
        for _ in range(size):
            self.counter += 1
            out.append(chronik.EventData("acct.changed", {"n": self.counter}))
        return out

    def tagged_batch(self, spec: list[tuple[str, list[str]]]) -> list[chronik.EventData]:
        out = []
        for etype, tags in spec:
            self.counter += 1
            out.append(chronik.EventData(etype, {"n": self.counter}, tags=tags))
        return out

    def record(
        self, events: list[chronik.EventData], positions: tuple[chronik.Position, ...]
    ) -> None:
        """Add stored events to the global model; their positions must follow the last one."""
        assert len(positions) == len(events)
        assert list(positions) == sorted(set(positions))
        assert not self.positions or self.positions[-1] < positions[0]
        for e, p in zip(events, positions, strict=True):
            self.global_order.append(e.payload["n"])
            self.positions.append(p)
            self.info[e.payload["n"]] = (e.type, tuple(sorted(set(e.tags))))

    def version(self, s: chronik.StreamId) -> int | None:
        return len(self.model[s]) - 1 if self.model[s] else None

    @rule(i=st.integers(0, 2), size=st.integers(1, 4), expected=expectations)
    def append(self, i: int, size: int, expected: chronik.Expected) -> None:
        s = STREAMS[i]
        events = self.batch(size)
        version = self.version(s)
        if allowed(expected, version):
            result = self.run(self.store.append(s, events, expected))
            first = 0 if version is None else version + 1
            assert (result.first_sequence, result.last_sequence) == (first, first + size - 1)
            self.model[s].extend(e.payload["n"] for e in events)
            self.record(events, result.positions)
            self.sent.append((s, events, result))
        else:
            try:
                self.run(self.store.append(s, events, expected))
            except chronik.WrongExpectedVersion as err:
                assert err.actual == version
            else:
                raise AssertionError("append should have been refused")

    @rule(pick=st.integers(0, 1000))
    def retry(self, pick: int) -> None:
        if not self.sent:
            return
        s, events, result = self.sent[pick % len(self.sent)]
        assert self.run(self.store.append(s, events, chronik.ANY)) == result

    @rule(
        parts=st.lists(
            st.tuples(st.integers(0, 2), st.integers(1, 3), expectations), min_size=1, max_size=3
        )
    )
    def unit(self, parts: list[tuple[int, int, chronik.Expected]]) -> None:
        versions = {s: self.version(s) for s in STREAMS}
        ok = True
        planned: list[tuple[chronik.StreamId, list[chronik.EventData], chronik.Expected]] = []
        for i, size, expected in parts:
            s = STREAMS[i]
            events = self.batch(size)
            ok = ok and allowed(expected, versions[s])
            v = versions[s]
            versions[s] = (-1 if v is None else v) + size
            planned.append((s, events, expected))

        async def go() -> list[chronik.AppendResult]:
            async with self.store.transaction() as tx:
                for s, events, expected in planned:
                    tx.append(s, events, expected)
            return tx.results

        if ok:
            results = self.run(go())
            for (s, events, _), result in zip(planned, results, strict=True):
                self.model[s].extend(e.payload["n"] for e in events)
                self.record(events, result.positions)
                self.sent.append((s, events, result))
        else:
            try:
                self.run(go())
            except chronik.WrongExpectedVersion:
                pass
            else:
                raise AssertionError("unit should have been refused")

    # --- DCB --------------------------------------------------------------------------------

    def matches(self, query: ModelQuery, n: int) -> int | None:
        """The model's rule: the first item whose types (any when none) and all tags fit."""
        etype, etags = self.info[n]
        for k, (types, tags) in enumerate(query):
            if (not types or etype in types) and set(tags) <= set(etags):
                return k
        return None

    def after(self, pick: int | None) -> tuple[chronik.Position | None, int]:
        """A stored position (or None) and its index in the global order (-1 for None)."""
        if pick is None or not self.positions:
            return None, -1
        i = pick % len(self.positions)
        return self.positions[i], i

    def condition(
        self, cond: tuple[ModelQuery, int | None] | None
    ) -> tuple[chronik.AppendCondition | None, tuple[int, chronik.Position] | None]:
        """The AppendCondition and the refusal the model predicts (item, first match)."""
        if cond is None:
            return None, None
        query, pick = cond
        after, start = self.after(pick)
        made = chronik.AppendCondition(to_query(query), after)
        for i in range(start + 1, len(self.global_order)):
            k = self.matches(query, self.global_order[i])
            if k is not None:
                return made, (k, self.positions[i])
        return made, None

    @precondition(lambda self: self.dcb)
    @rule(spec=tagged_specs, cond=conditions)
    def append_tagged(
        self, spec: list[tuple[str, list[str]]], cond: tuple[ModelQuery, int | None] | None
    ) -> None:
        """A tagged append, with or without a condition: stored, or refused naming the item
        and the first match the model predicts."""
        events = self.tagged_batch(spec)
        condition, refusal = self.condition(cond)
        call = lambda: self.store.append_tagged(events, condition)  # noqa: E731
        if refusal is None:
            result = self.run(call())
            assert result.position == result.positions[-1]
            self.record(events, result.positions)
            self.retries.append((call, result))
        else:
            try:
                self.run(call())
            except chronik.AppendConditionFailed as err:
                assert (err.item, err.position) == refusal
            else:
                raise AssertionError(f"the condition should have failed at {refusal}")

    @precondition(lambda self: self.dcb)
    @rule(
        spec=tagged_specs,
        cond=conditions,
        i=st.integers(0, 2),
        expected=expectations,
        also=st.one_of(st.none(), st.tuples(st.integers(0, 2), st.integers(1, 2), st.booleans())),
    )
    def unit_tagged(
        self,
        spec: list[tuple[str, list[str]]],
        cond: tuple[ModelQuery, int | None] | None,
        i: int,
        expected: chronik.Expected,
        also: tuple[int, int, bool] | None,
    ) -> None:
        """A unit: tx.append_tagged, tx.expect on a stream, and maybe a stream append (before
        or after the tagged one); every check sees the store before the unit."""
        events = self.tagged_batch(spec)
        condition, refusal = self.condition(cond)
        guarded, version = STREAMS[i], self.version(STREAMS[i])
        plain = None if also is None else (STREAMS[also[0]], self.batch(also[1]), also[2])

        async def go() -> list[chronik.AppendResult]:
            async with self.store.transaction() as tx:
                if plain is not None and plain[2]:
                    tx.append(plain[0], plain[1])
                tx.append_tagged(events, condition)
                tx.expect(guarded, expected)
                if plain is not None and not plain[2]:
                    tx.append(plain[0], plain[1])
            return tx.results

        expect_ok = allowed(expected, version)
        if refusal is None and expect_ok:
            results = self.run(go())
            parts: list[tuple[list[chronik.EventData], chronik.StreamId | None]] = [(events, None)]
            if plain is not None:
                parts.insert(0 if plain[2] else 1, (plain[1], plain[0]))
            assert len(results) == len(parts)
            for (evs, stream), result in zip(parts, results, strict=True):
                if stream is not None:
                    self.model[stream].extend(e.payload["n"] for e in evs)
                self.record(evs, result.positions)
            self.retries.append((go, results))
            return
        try:
            self.run(go())
        except chronik.AppendConditionFailed as err:
            assert refusal is not None and (err.item, err.position) == refusal
        except chronik.WrongExpectedVersion as err:
            assert not expect_ok and (err.stream, err.actual) == (guarded, version)
        else:
            raise AssertionError("the unit should have been refused")

    @precondition(lambda self: self.dcb and bool(self.retries))
    @rule(pick=st.integers(0, 1000))
    def retry_tagged(self, pick: int) -> None:
        """A committed tagged append or unit, sent again, answers with its original results
        (though its condition or expectation would fail now)."""
        call, result = self.retries[pick % len(self.retries)]
        assert self.run(call()) == result

    @precondition(lambda self: self.dcb)
    @rule(
        query=queries,
        pick=afters,
        backward=st.booleans(),
        limit=st.one_of(st.none(), st.integers(0, 4)),
    )
    def read_query(
        self, query: ModelQuery, pick: int | None, backward: bool, limit: int | None
    ) -> None:
        """read_query returns the model's matches in order (newest first backward), with tags."""
        after, start = self.after(pick)
        if backward:
            indexes = range((len(self.global_order) if after is None else start) - 1, -1, -1)
        else:
            indexes = range(start + 1, len(self.global_order))
        want = [
            n for n in (self.global_order[i] for i in indexes) if self.matches(query, n) is not None
        ]
        want = want if limit is None else want[:limit]
        got = self.run(
            collect(
                self.store.read_query(to_query(query), after=after, limit=limit, backward=backward)
            )
        )
        assert [e.json()["n"] for e in got] == want
        assert [e.tags for e in got] == [self.info[n][1] for n in want]

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "store"):
            return

        async def read() -> tuple[list[int], dict[chronik.StreamId, list[int]], list[Any]]:
            everything = [e.json()["n"] async for e in self.store.read_all()]
            streams = {s: [e.json()["n"] async for e in self.store.read_stream(s)] for s in STREAMS}
            versions = [await self.store.stream_version(s) for s in STREAMS]
            return everything, streams, versions

        everything, streams, versions = self.run(read())
        assert everything == self.global_order
        if self.dcb:
            stored = self.run(collect(self.store.read_all()))
            assert [(e.type, e.tags) for e in stored] == [self.info[n] for n in everything]
            assert [e.position for e in stored] == self.positions
        assert streams == self.model
        assert versions == [self.version(s) for s in STREAMS]


def to_query(query: ModelQuery) -> chronik.Query:
    """The chronik Query of a model query."""
    return chronik.Query([chronik.QueryItem(types, tags) for types, tags in query])


class MemoryStoreMachine(StoreMachine):
    """The model test on the memory store."""


class SQLiteStoreMachine(StoreMachine):
    url = "sqlite:///{tmp}/model.db"


TestMemoryModel = MemoryStoreMachine.TestCase
TestMemoryModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestSQLiteModel = SQLiteStoreMachine.TestCase
TestSQLiteModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
