"""Hypothesis drives memory and SQLite stores with random operations against a plain model."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import chronik
from chronik.store.base import EventStore

STREAMS = [chronik.StreamId("acct", f"a{i}") for i in range(3)]
expectations = st.one_of(
    st.sampled_from([chronik.ANY, chronik.NO_STREAM, chronik.STREAM_EXISTS]),
    st.integers(min_value=0, max_value=6),
)


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

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def open_store(self) -> None:
        url = self.url.replace("{tmp}", self.tmp)
        self.store: EventStore = self.run(chronik.open_store(url).open())

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
            ns = [e.payload["n"] for e in events]
            self.model[s].extend(ns)
            self.global_order.extend(ns)
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
                ns = [e.payload["n"] for e in events]
                self.model[s].extend(ns)
                self.global_order.extend(ns)
                self.sent.append((s, events, result))
        else:
            try:
                self.run(go())
            except chronik.WrongExpectedVersion:
                pass
            else:
                raise AssertionError("unit should have been refused")

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
        assert streams == self.model
        assert versions == [self.version(s) for s in STREAMS]


class SQLiteStoreMachine(StoreMachine):
    url = "sqlite:///{tmp}/model.db"


TestMemoryModel = StoreMachine.TestCase
TestMemoryModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestSQLiteModel = SQLiteStoreMachine.TestCase
TestSQLiteModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
