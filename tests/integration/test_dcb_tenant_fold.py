"""A DCB command decides on its own tenant's events: the command path reads (payload rows and
whole events alike) and checks its condition in the command's tenant, so what another tenant
stored never decides for it, on memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, EventData, Query
from examples.courses.events import registry as courses_registry
from examples.courses.logic import courses

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the app runs on."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/t.db"


def _claim(username: str, student: str, tenant: str, command_id: str | None = None) -> Command:
    payload = {"username": username, "student_id": student}
    return Command(
        domain="courses",
        aggregate_id=username,
        type="ClaimUsername",
        payload=payload,
        tenant=tenant,
        command_id=command_id,
    )


async def test_a_username_is_claimed_once_per_tenant(url: str) -> None:
    """The courses example: ada claimed in beta leaves acme and the default tenant free; in
    each tenant a second claim of ada is refused, and each tenant holds one claim."""
    app = chronik.Chronik(store=url, registry=courses_registry, run_projections=False)
    app.add_model(courses)
    async with app:
        await app.dispatch(_claim("ada", "s1", "beta"))
        for tenant in ("acme", ""):
            result = await app.dispatch(_claim("ada", "s2", tenant))
            assert [e.stream.tenant for e in result.events] == [tenant]
        for tenant in ("beta", "acme", ""):
            with pytest.raises(chronik.CommandRejected, match="ada is taken"):
                await app.dispatch(_claim("ada", "s3", tenant))
        query = Query.of(["username.claimed"], ["username:ada"])
        for tenant in ("beta", "acme", ""):
            claims = [e async for e in app.store.read_query(query, tenant=tenant)]
            assert len(claims) == 1, tenant
        assert len([e async for e in app.store.read_query(query)]) == 3


class Claimed(msgspec.Struct):
    name: str
    by: str


class Claim(msgspec.Struct):
    name: str


def _names(seen: list[Any]) -> tuple[chronik.EventRegistry, chronik.DcbDecider]:
    """A name claimed once per tenant; ``seen`` records every event the fold gave evolve.
    ``name.claimed`` is at version 2 (version 1 upcast: its reads take whole events)."""
    registry = chronik.EventRegistry()
    registry.register(Claimed, "name.claimed", version=2)

    @registry.upcaster("name.claimed", 1)
    def add_by(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "by": "unknown"}

    def evolve(state: list[Any], event: Any) -> list[Any]:
        seen.append(event)
        return [*state, event]

    def decide(command: Command, state: list[Any]) -> Any:
        if state:
            raise chronik.CommandRejected(f"{command.payload.name} is taken")
        return EventData("name.claimed", {"name": command.payload.name, "by": command.tenant})

    decider = chronik.DcbDecider(
        "names",
        lambda c: Query.of(["name.claimed"], [f"name:{c.payload.name}"]),
        lambda c, s: _tagged(decide(c, s), c.payload.name),
        evolve,
        list,
        commands={"Claim": Claim},
    )
    return registry, decider


def _tagged(data: EventData, name: str) -> EventData:
    return msgspec.structs.replace(data, tags=(f"name:{name}",))


def _stored(name: str, payload: dict[str, Any], version: int = 2) -> EventData:
    return EventData("name.claimed", payload, schema_version=version, tags=[f"name:{name}"])


def _ask(name: str, tenant: str) -> Command:
    return Command(
        domain="names", aggregate_id=name, type="Claim", payload={"name": name}, tenant=tenant
    )


async def test_the_fold_never_reads_another_tenants_events(url: str) -> None:
    """Another tenant's matching events whose payloads do not decode (any read of them would
    fail the command) are never folded: not by the payload-row path, nor by whole events
    after an upcast took over; evolve sees the command's tenant's events only."""
    seen: list[Any] = []
    registry, decider = _names(seen)
    app = chronik.Chronik(store=url, registry=registry, run_projections=False)
    app.add_model(decider)
    async with app:
        store = app.store
        await store.append_tagged([_stored("ada", {"name": "ada", "by": "a1"})], tenant="acme")
        await store.append_tagged([_stored("bob", {"name": "bob"}, version=1)], tenant="acme")
        for name in ("ada", "bob", "cy"):  # beta's: undecodable, after acme's
            await store.append_tagged([_stored(name, {"name": 7})], tenant="beta")
        with pytest.raises(chronik.UndecodableEvent):  # the trap is armed: beta reads it
            await app.dispatch(_ask("cy", "beta"))
        result = await app.dispatch(_ask("cy", "acme"))  # rows path, nothing of acme's
        assert [(e.stream.tenant, e.json()["by"]) for e in result.events] == [("acme", "acme")]
        assert seen == []
        with pytest.raises(chronik.CommandRejected, match="ada is taken"):  # rows path
            await app.dispatch(_ask("ada", "acme"))
        assert seen == [Claimed("ada", "a1")]
        with pytest.raises(chronik.CommandRejected, match="bob is taken"):  # whole events
            await app.dispatch(_ask("bob", "acme"))
        assert seen[1:] == [Claimed("bob", "unknown")]
        await app.dispatch(_ask("ada", "gamma"))
        assert len(seen) == 2


async def test_a_command_id_answers_in_its_own_tenant_only(url: str) -> None:
    """A command id dispatched again in its tenant returns the first dispatch's events; the
    same id in another tenant is refused (ValidationError on command_id), never answered with
    the other tenant's events."""
    app = chronik.Chronik(store=url, registry=courses_registry, run_projections=False)
    app.add_model(courses)
    async with app:
        first = await app.dispatch(_claim("ada", "s1", "beta", "claim-1"))
        again = await app.dispatch(_claim("ada", "s1", "beta", "claim-1"))
        assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
        with pytest.raises(chronik.ValidationError) as err:
            await app.dispatch(_claim("ada", "s1", "acme", "claim-1"))
        assert err.value.field == "command_id"
        assert [e async for e in app.store.read_all(tenant="acme")] == []
