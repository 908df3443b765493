"""Aggregate classes, snapshots and upcasting on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, StreamId

registry = chronik.EventRegistry()


@registry.event()
class Added(msgspec.Struct):
    n: int


@registry.event("counter.reset", version=3, aliases=["CounterCleared"])
class Reset(msgspec.Struct):
    to: int
    reason: str


@registry.upcaster("counter.reset", from_version=1)
def _reset_v1(payload: dict[str, Any]) -> dict[str, Any]:  # v1 had no fields: reset to zero
    return {"to": 0}


@registry.upcaster("counter.reset", from_version=2)
def _reset_v2(payload: dict[str, Any]) -> dict[str, Any]:  # v3 added a reason
    return {**payload, "reason": "unknown"}


class Add(msgspec.Struct):
    n: int


class Counter(chronik.Aggregate):
    domain = "counter"
    snapshots = chronik.Snapshots(every=10)

    total: int = 0
    history: list[int] = []  # noqa: RUF012 - copied for each instance
    resets: int = 0

    @chronik.command()
    def add(self, cmd: Add, command: Command) -> None:
        self.require(cmd.n != 0, "Nothing to add")
        if command.metadata and "double" in command.metadata:
            self.emit(Added(cmd.n))
        self.emit(Added(cmd.n))

    @chronik.command("Boom")
    def boom(self, payload: dict[str, Any]) -> None:
        self.emit(Added(1))
        raise ValueError("half done")

    @chronik.apply
    def _added(self, event: Added) -> None:
        self.total += event.n
        self.history.append(event.n)

    @chronik.apply
    def _reset(self, event: Reset) -> None:
        self.total = event.to
        self.resets += 1


def add(n: int, aggregate_id: str = "c1", **kw: Any) -> Command:
    return Command(domain="counter", aggregate_id=aggregate_id, type="Add", payload={"n": n}, **kw)


def app_on(url: str, cls: type[chronik.Aggregate] = Counter) -> chronik.Chronik:
    app = chronik.Chronik(store=url, registry=registry)
    app.add_aggregate(cls)
    return app


async def test_command_methods_emit_and_apply() -> None:
    """A command method emits events that are applied at once and appended in order."""
    async with app_on("memory://") as app:
        r = await app.dispatch(add(2, metadata={"double": "1"}))
        assert [e.json() for e in r.events] == [{"n": 2}, {"n": 2}]
        state = await app.load("counter", "c1")
        assert (state.total, state.history, state.id) == (4, [2, 2], "c1")
        with pytest.raises(chronik.CommandRejected, match="Nothing to add"):
            await app.dispatch(add(0))


async def test_a_failing_command_method_leaves_no_trace() -> None:
    """An exception after emit appends nothing, and the cached instance is not reused."""
    async with app_on("memory://") as app:
        await app.dispatch(add(1))
        with pytest.raises(chronik.HandlerError, match="half done"):
            await app.dispatch(Command(domain="counter", aggregate_id="c1", type="Boom"))
        r = await app.dispatch(add(1))
        assert r.version == 1
        assert (await app.load("counter", "c1")).history == [1, 1]


def test_aggregate_classes_are_checked_when_defined() -> None:
    """A state field without a default or a command without a name is a ConfigurationError."""
    with pytest.raises(chronik.ConfigurationError, match="default"):

        class NoDefault(chronik.Aggregate):
            domain = "x"
            total: int

    with pytest.raises(chronik.ConfigurationError, match="name the command"):

        class Nameless(chronik.Aggregate):
            domain = "x"

            @chronik.command()
            def handle(self, payload: dict[str, Any]) -> None: ...

    class NoDomain(chronik.Aggregate):
        pass

    with pytest.raises(chronik.ConfigurationError, match="domain"):
        chronik.Chronik(store="memory://").add_aggregate(NoDomain)


async def test_snapshots_are_taken_every_n_events_and_used(tmp_path: Path) -> None:
    """Every 10 events a snapshot is written in the background; loads start from it."""
    url = f"sqlite:///{tmp_path}/snap.db"
    async with app_on(url) as app:
        for i in range(25):
            await app.dispatch(add(i + 1))
        await app.bus.repository.drain()
        snap = await app.store.load_snapshot(StreamId("counter", "c1"))
        assert snap is not None and snap.sequence == 19 and snap.type == "Counter"
    async with app_on(url) as app:
        loaded = await app.bus.repository.load(app.bus.model("counter"), StreamId("counter", "c1"))
        assert loaded.replayed == 5 and loaded.version == 24
        assert loaded.state.total == sum(range(1, 26))
        assert loaded.state.history == list(range(1, 26))


async def test_snapshot_plus_tail_equals_full_replay(tmp_path: Path) -> None:
    """The state loaded from a snapshot and its tail equals a replay of every event."""
    url = f"sqlite:///{tmp_path}/eq.db"
    async with app_on(url) as app:
        for i in range(37):
            await app.dispatch(add(i % 5 + 1))
        await app.bus.repository.drain()
        model = app.bus.model("counter")
        stream = StreamId("counter", "c1")
        with_snapshot = await app.bus.repository.load(model, stream, use_cache=False)
        full = model.initial("c1")
        async for event in app.store.read_stream(stream):
            full = model.evolve(full, registry.decode(event))
        assert with_snapshot.replayed == 7
        assert model.encode_state(with_snapshot.state) == model.encode_state(full)


@pytest.mark.parametrize("damage", ["corrupt", "other-version", "other-type"])
async def test_unusable_snapshots_fall_back_to_full_replay(damage: str) -> None:
    """A corrupt or incompatible snapshot is ignored and the stream replayed in full."""
    async with app_on("memory://") as app:
        for _ in range(12):
            await app.dispatch(add(1))
        await app.bus.repository.drain()
        stream = StreamId("counter", "c1")
        snap = await app.store.load_snapshot(stream)
        assert snap is not None
        bad = {
            "corrupt": msgspec.structs.replace(snap, state=b'{"total": "x"}', sequence=11),
            "other-version": msgspec.structs.replace(snap, schema_version=2, sequence=11),
            "other-type": msgspec.structs.replace(snap, type="Other", sequence=11),
        }[damage]
        await app.store.save_snapshot(bad)
        loaded = await app.bus.repository.load(app.bus.model("counter"), stream, use_cache=False)
        assert loaded.replayed == 12 and loaded.state.total == 12


async def test_slow_loads_trigger_a_snapshot() -> None:
    """With slower_than_ms=0 any load that replayed events is followed by a snapshot."""

    class Slow(Counter):
        domain = "slow"
        snapshots = chronik.Snapshots(every=None, slower_than_ms=0)

    async with app_on("memory://", Slow) as app:
        stream = StreamId("slow", "s1")
        for i in range(3):
            await app.store.append(stream, [registry.to_event_data(Added(i))])
        await app.dispatch(Command(domain="slow", aggregate_id="s1", type="Add", payload={"n": 5}))
        await app.bus.repository.drain()
        snap = await app.store.load_snapshot(stream)
        assert snap is not None and snap.sequence == 3


async def test_old_versions_and_old_names_upcast_on_load() -> None:
    """v1 and v2 events and a renamed type are upcast when loaded; stored bytes are unchanged."""
    async with app_on("memory://") as app:
        stream = StreamId("counter", "c1")
        await app.store.append(
            stream,
            [
                chronik.EventData("Added", {"n": 5}),
                chronik.EventData("counter.reset", {}, schema_version=1),
                chronik.EventData("Added", {"n": 7}),
                chronik.EventData("CounterCleared", {"to": 3}, schema_version=2),
            ],
        )
        state = await app.load("counter", "c1")
        assert (state.total, state.resets) == (3, 2)
        stored = [e async for e in app.store.read_stream(stream)]
        assert [(e.type, e.schema_version, e.json()) for e in stored[1::2]] == [
            ("counter.reset", 1, {}),
            ("CounterCleared", 2, {"to": 3}),
        ]
        upcast = registry.upcast(stored[3])
        assert (upcast.type, upcast.schema_version) == ("counter.reset", 3)
        assert upcast.json() == {"to": 3, "reason": "unknown"}
        await app.dispatch(add(1))  # new events are written at the current version
        (last,) = [e async for e in app.store.read_stream(stream, backward=True, limit=1)]
        assert (last.type, last.schema_version) == ("Added", 1)


async def test_dataclass_and_dict_states_snapshot_and_load() -> None:
    """Decider states that are dataclasses or dicts are snapshotted with msgspec and loaded."""
    import dataclasses

    @dataclasses.dataclass
    class Totals:
        total: int = 0
        seen: list[int] = dataclasses.field(default_factory=list)

    def evolve_dc(state: Totals, event: Added) -> Totals:
        return Totals(state.total + event.n, [*state.seen, event.n])

    def evolve_dict(state: dict[str, int], event: Added) -> dict[str, int]:
        return {"total": state.get("total", 0) + event.n}

    for domain, evolve, initial in (("dc", evolve_dc, Totals), ("dict", evolve_dict, dict)):
        app = chronik.Chronik(store="memory://", registry=registry)
        app.add_decider(
            domain,
            lambda c, s: Added(c.payload["n"]),
            evolve,
            initial,
            snapshots=chronik.Snapshots(every=2),
        )
        async with app:
            for n in (1, 2, 3):
                await app.dispatch(
                    Command(domain=domain, aggregate_id="x", type="Add", payload={"n": n})
                )
            await app.bus.repository.drain()
            loaded = await app.bus.repository.load(
                app.bus.model(domain), StreamId(domain, "x"), use_cache=False
            )
            assert loaded.snapshot_sequence == 1 and loaded.replayed == 1
            expected = Totals(6, [1, 2, 3]) if domain == "dc" else {"total": 6}
            assert loaded.state == expected


class Audited(Counter):
    """A counter that also records raw audit events of a type nobody registered."""

    domain = "audited"
    audits: list[str] = []  # noqa: RUF012 - copied for each instance

    @chronik.command("Audit")
    def audit(self, payload: dict[str, Any]) -> None:
        self.emit(Added(1))
        self.emit(chronik.EventData("audit.noted", {"who": payload["who"]}))

    @chronik.command("AddRaw")
    def add_raw(self, payload: dict[str, Any]) -> None:
        self.emit(chronik.EventData("Added", {"n": payload["n"]}))  # a registered type, raw

    @chronik.apply
    def _audited(self, event: chronik.RecordedEvent) -> None:
        self.audits.append(event.json()["who"])


async def test_an_aggregate_may_emit_raw_event_data_of_an_unregistered_type() -> None:
    """A raw EventData an aggregate emits is stored; its RecordedEvent applier runs after the
    command (cached state) and on a fresh load, typed events as before."""
    async with app_on("memory://", Audited) as app:
        audit = Command(domain="audited", aggregate_id="a1", type="Audit", payload={"who": "ada"})
        result = await app.dispatch(audit)
        assert [e.type for e in result.events] == ["Added", "audit.noted"]
        await app.dispatch(msgspec.structs.replace(audit, payload={"who": "bob"}, command_id="2"))
        state = await app.load("audited", "a1")
        assert (state.total, state.audits) == (2, ["ada", "bob"])
        cached = await app.bus.repository.load(app.bus.model("audited"), StreamId("audited", "a1"))
        assert cached.state.audits == ["ada", "bob"]


async def test_raw_event_data_of_a_registered_type_evolves_the_cached_state_too() -> None:
    """An aggregate emitting a raw EventData of a registered type: the state kept after the
    command (the cache) equals the state a fresh load gives."""
    async with app_on("memory://", Audited) as app:
        add = Command(domain="audited", aggregate_id="a1", type="AddRaw", payload={"n": 2})
        await app.dispatch(add)
        model, stream = app.bus.model("audited"), StreamId("audited", "a1")
        cached = await app.bus.repository.load(model, stream)
        fresh = await app.bus.repository.load(model, stream, use_cache=False)
        assert cached.state.total == fresh.state.total == 2


def test_given_runs_an_aggregate_emitting_raw_event_data() -> None:
    """given/when/then with registry= accepts the raw EventData an aggregate emits, as the bus
    does, and its RecordedEvent applier runs after the command."""
    from chronik.testing import given

    given(Audited, aggregate_id="a1", registry=registry).when("Audit", {"who": "ada"}).then_events(
        Added(1), chronik.EventData("audit.noted", {"who": "ada"})
    ).then_state(lambda s: (s.total, s.audits) == (1, ["ada"]))


class Tally(chronik.Aggregate):
    """State with mutable defaults written without mutable class attributes."""

    domain = "tally"
    snapshots = chronik.Snapshots(every=1)
    seen: list[int] = msgspec.field(default_factory=list)
    label: str = msgspec.field(default="t")
    tags: tuple[str, ...] = ()

    @chronik.command()
    def add(self, cmd: Add) -> None:
        self.emit(Added(cmd.n))

    @chronik.apply
    def _added(self, event: Added) -> None:
        self.seen.append(event.n)


async def test_state_fields_may_default_by_msgspec_field(tmp_path: Path) -> None:
    """``msgspec.field(default_factory=...)`` gives each instance its own value, and the state
    survives a snapshot round trip; a field() with no default is refused like a bare one."""
    one, two = Tally("a"), Tally("b")
    one.seen.append(1)
    assert two.seen == [] and two.label == "t" and two.tags == ()
    app = chronik.Chronik(store=f"sqlite:///{tmp_path / 't.db'}", registry=registry)
    app.add_aggregate(Tally)
    async with app:
        for n in (1, 2):
            await app.dispatch(Command(domain="tally", aggregate_id="t1", type="Add",
                                       payload={"n": n}))  # fmt: skip
        await app.bus.close()  # the background snapshot written
        snapshot = await app.store.load_snapshot(StreamId("tally", "t1"))
        assert snapshot is not None and snapshot.sequence == 1
        loaded = await app.load("tally", "t1")
        assert loaded.seen == [1, 2] and loaded.label == "t"
    with pytest.raises(chronik.ConfigurationError, match="default"):

        class Required(chronik.Aggregate):
            domain = "x"
            total: int = msgspec.field()
