"""The event type registry: allowlist, encoding, decoding and upcaster chains."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

import chronik


class CustomerRegistered(msgspec.Struct):
    name: str
    email: str
    tier: str = "basic"


@dataclasses.dataclass
class CustomerRenamed:
    name: str


def recorded(etype: str, payload: bytes, version: int = 1) -> chronik.RecordedEvent:
    return chronik.RecordedEvent(
        "e-1",
        chronik.StreamId("customer", "c1"),
        0,
        etype,
        version,
        payload,
        chronik.Position(1),
        0,
    )


@pytest.fixture
def registry() -> chronik.EventRegistry:
    reg = chronik.EventRegistry()
    reg.register(CustomerRegistered, "customer.registered", version=3)
    reg.register(CustomerRenamed, "customer.renamed")

    @reg.upcaster("customer.registered", 1)
    def split_contact(p: dict[str, Any]) -> dict[str, Any]:
        return {"name": p["name"], "email": p.get("contact", "")}

    @reg.upcaster("customer.registered", 2)
    def add_tier(p: dict[str, Any]) -> dict[str, Any]:
        return {**p, "tier": "gold" if p["email"].endswith("@vip.example") else "basic"}

    return reg


def test_round_trip_structs_and_dataclasses(registry: chronik.EventRegistry) -> None:
    """to_event_data names and versions an event; decode gives back an equal instance."""
    for event in (CustomerRegistered("Ada", "ada@example.com"), CustomerRenamed("Ada L.")):
        data = registry.to_event_data(event, {"correlation_id": "c-1"})
        assert data.type == registry.name_of(event)
        assert data.schema_version == registry.version_of(data.type)
        payload = msgspec.json.encode(data.payload)
        assert registry.decode(recorded(data.type, payload, data.schema_version)) == event


def test_upcaster_chain_runs_from_any_old_version(registry: chronik.EventRegistry) -> None:
    """v1 and v2 payloads are brought to v3 step by step on decode and on upcast."""
    v1 = recorded("customer.registered", b'{"name": "Bo", "contact": "bo@vip.example"}', 1)
    assert registry.decode(v1) == CustomerRegistered("Bo", "bo@vip.example", "gold")
    v2 = recorded("customer.registered", b'{"name": "Cy", "email": "cy@x.example"}', 2)
    up = registry.upcast(v2)
    assert up.schema_version == 3
    assert up.json() == {"name": "Cy", "email": "cy@x.example", "tier": "basic"}
    current = recorded("customer.registered", b'{"name":"D","email":"d","tier":"t"}', 3)
    assert registry.upcast(current) is current


def test_unknown_type_is_a_typed_error_never_an_import(registry: chronik.EventRegistry) -> None:
    """Names and classes outside the allowlist raise UnknownEventType."""
    with pytest.raises(chronik.UnknownEventType) as info:
        registry.decode(recorded("os.system", b"{}"))
    assert info.value.type_name == "os.system"
    with pytest.raises(chronik.UnknownEventType):
        registry.class_for("chronik.messages.StreamId")
    with pytest.raises(chronik.UnknownEventType):
        registry.to_event_data(chronik.StreamId("a", "b"))
    assert "customer.renamed" in registry and registry.names() == [
        "customer.registered",
        "customer.renamed",
    ]


def test_missing_or_failing_upcaster_is_an_upcast_error() -> None:
    """A chain gap, a raising step, a non-dict result or a newer version raise UpcastError from
    the chain, and decode names the event in an UndecodableEvent with the repair."""
    reg = chronik.EventRegistry()
    reg.register(CustomerRenamed, "renamed", version=3)
    reg.add_upcaster("renamed", 2, lambda p: {"name": p["nom"]})
    with pytest.raises(chronik.UpcastError, match="no upcaster"):
        reg.upcast_payload("renamed", 1, {"name": "x"})
    with pytest.raises(chronik.UpcastError, match="failed"):
        reg.upcast_payload("renamed", 2, {"name": "x"})
    with pytest.raises(chronik.UpcastError, match="newer"):
        reg.upcast_payload("renamed", 4, {"name": "x"})
    with pytest.raises(chronik.UndecodableEvent, match=r"no upcaster.*upcaster for renamed v1"):
        reg.decode(recorded("renamed", b'{"name": "x"}', 1))
    with pytest.raises(chronik.UndecodableEvent, match=r"failed.*fix\) the upcaster"):
        reg.decode(recorded("renamed", b'{"name": "x"}', 2))
    with pytest.raises(chronik.UndecodableEvent, match=r"newer.*deploy the code"):
        reg.decode(recorded("renamed", b'{"name": "x"}', 4))
    reg.add_upcaster("renamed", 1, lambda p: [p])  # type: ignore[arg-type, return-value]
    with pytest.raises(chronik.UndecodableEvent, match="returned list"):
        reg.decode(recorded("renamed", b'{"nom": "x"}', 1))


def test_payload_that_does_not_fit_is_a_deserialization_error(
    registry: chronik.EventRegistry,
) -> None:
    """Stored bytes that do not decode into the class raise UndecodableEvent (a
    DeserializationError) naming stream, sequence, id, type and version, and the repair."""
    with pytest.raises(chronik.DeserializationError):
        registry.decode(recorded("customer.renamed", b'{"name": 5}'))
    with pytest.raises(chronik.DeserializationError):
        registry.decode(recorded("customer.renamed", b"not json"))
    with pytest.raises(chronik.DeserializationError):
        registry.decode(recorded("customer.registered", b"[1]", 1))
    with pytest.raises(chronik.UndecodableEvent) as caught:
        registry.decode(recorded("customer.renamed", b'{"foo": "bar"}'))
    err = caught.value
    assert (err.stream, err.sequence, err.event_id) == ("customer/c1", 0, "e-1")
    assert (err.event_type, err.schema_version) == ("customer.renamed", 1)
    assert "customer/c1#0" in str(err) and "e-1" in str(err)
    assert "register customer.renamed at version 2 with an upcaster for customer.renamed v1" in (
        str(err)
    )
    deep = b'{"name": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(chronik.UndecodableEvent, match="not readable JSON"):
        registry.decode(recorded("customer.renamed", deep))


def test_registration_errors() -> None:
    """Only dataclasses/Structs, valid names, one class per name and one name per class."""
    reg = chronik.EventRegistry()
    with pytest.raises(chronik.ConfigurationError):
        reg.register(dict)
    with pytest.raises(chronik.InvalidEventType):
        reg.register(CustomerRenamed, "bad name")
    reg.register(CustomerRenamed)
    assert reg.name_of(CustomerRenamed) == "CustomerRenamed"
    with pytest.raises(chronik.ConfigurationError):
        reg.register(CustomerRegistered, "CustomerRenamed")
    with pytest.raises(chronik.ConfigurationError):
        reg.register(CustomerRenamed, "other.name")
    with pytest.raises(chronik.ConfigurationError):
        reg.register(CustomerRegistered, version=0)
    reg.add_upcaster("CustomerRenamed", 1, lambda p: p)
    with pytest.raises(chronik.ConfigurationError):
        reg.add_upcaster("CustomerRenamed", 1, lambda p: p)


async def test_registry_events_append_and_decode_through_a_store(
    registry: chronik.EventRegistry,
) -> None:
    """Registered events go through a real store and decode back to equal objects."""
    async with chronik.open_store("memory://") as store:
        s = chronik.StreamId("customer", "c1")
        events = [CustomerRegistered("Ada", "a@x"), CustomerRenamed("Ada L.")]
        await store.append(s, [registry.to_event_data(e) for e in events], chronik.NO_STREAM)
        assert [registry.decode(e) async for e in store.read_stream(s)] == events


async def test_unencodable_registered_event_is_a_serialization_error(
    registry: chronik.EventRegistry,
) -> None:
    """A registered event holding a value JSON cannot carry fails to append, storing nothing."""
    async with chronik.open_store("memory://") as store:
        bad = registry.to_event_data(CustomerRenamed(name={1, object()}))  # type: ignore[arg-type]
        with pytest.raises(chronik.SerializationError):
            await store.append(chronik.StreamId("customer", "c1"), [bad])
        assert await store.head() is None


def test_current_decoders_follow_registrations() -> None:
    """current_decoders maps names and aliases to the current version and class decoder, and
    is rebuilt when a type is registered."""
    reg = chronik.EventRegistry()
    reg.register(CustomerRegistered, "customer.registered", version=2, aliases=["cust.reg"])
    version, decode = reg.current_decoders()["cust.reg"]
    assert version == 2 and decode(b'{"name": "A", "email": "a@x"}') == CustomerRegistered(
        "A", "a@x"
    )
    assert "customer.renamed" not in reg.current_decoders()
    reg.register(CustomerRenamed, "customer.renamed")
    assert reg.current_decoders()["customer.renamed"][1](b'{"name": "B"}') == CustomerRenamed("B")


async def test_a_load_over_an_unfit_current_payload_names_the_event() -> None:
    """Repository.load decodes current payloads directly and hands unregistered types over as
    they are, yet a payload that does not fit its class still fails the load with
    UndecodableEvent naming the stream."""
    reg = chronik.EventRegistry()
    reg.register(CustomerRenamed, "customer.renamed")

    def evolve(state: list[str], event: Any) -> list[str]:
        return [*state, event.name if isinstance(event, CustomerRenamed) else event.type]

    app = chronik.Chronik(store="memory://", registry=reg)
    app.add_decider("customer", lambda c, s: [], evolve, list)
    async with app:
        stream = chronik.StreamId("customer", "c1")
        good = chronik.EventData("customer.renamed", {"name": "A"})
        await app.store.append(stream, [good, chronik.EventData("other.type", {})])
        model = app.bus.model("customer")
        loaded = await app.bus.repository.load(model, stream, use_cache=False)
        assert loaded.state == ["A", "other.type"] and loaded.version == 1
        await app.store.append(stream, [chronik.EventData("customer.renamed", {"name": 5})])
        with pytest.raises(chronik.UndecodableEvent, match="customer/c1"):
            await app.bus.repository.load(model, stream, use_cache=False)
