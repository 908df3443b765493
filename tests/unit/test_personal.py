"""Personal fields: registration checks, envelopes, the codec and the command path."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

import chronik
from chronik.errors import ConfigurationError, DeserializationError, KeyNotLoaded
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import FORGOTTEN, KeyRing, MemoryKeyStore, is_envelope
from chronik.personal.envelope import open_value, seal_value

KEY = bytes(range(32))


class Customer(msgspec.Struct):
    """A registration with a personal email and an optional personal phone."""

    customer_id: str
    email: str
    phone: str | None = None
    age: int = 0


def _registry(keys: KeyRing | None = None) -> chronik.EventRegistry:
    """A registry with Customer registered, email and phone personal."""
    registry = chronik.EventRegistry()
    registry.register(
        Customer, "customer.registered", personal={"email": "customer_id", "phone": "customer_id"}
    )
    registry.use_keys(keys)
    return registry


@pytest.mark.parametrize(
    ("personal", "words"),
    [
        ({"mail": "customer_id"}, "no personal field 'mail'"),
        ({"email": "owner"}, "no subject field 'owner'"),
        ({"email": "phone", "phone": "customer_id"}, "cannot itself be personal"),
        ({"age": "customer_id"}, "must accept None or a str"),
        ({"email": "age"}, "subject field 'age' must be a str"),
        ({}, "must map personal fields"),
    ],
)
def test_registration_checks_the_personal_fields(personal: dict[str, str], words: str) -> None:
    """A missing field, a personal subject, a field without a placeholder, a non-str subject
    and an empty mapping are ConfigurationErrors naming the problem; nothing is registered."""
    registry = chronik.EventRegistry()
    with pytest.raises(ConfigurationError, match=words):
        registry.register(Customer, "customer.registered", personal=personal)
    assert "customer.registered" not in registry


def test_an_envelope_opens_only_where_it_was_sealed() -> None:
    """The envelope holds no plaintext and opens with its key for its type, field and
    subject; another field, type, subject, key or altered bytes fail to open."""
    env = seal_value(KEY, "c-1", "customer.registered", "email", "ada@example.test")
    assert is_envelope(env) and "ada" not in repr(env)
    assert open_value(KEY, "customer.registered", "email", env) == "ada@example.test"
    bad: list[tuple[bytes, str, str, dict[str, str]]] = [
        (KEY, "customer.registered", "phone", env),
        (KEY, "customer.renamed", "email", env),
        (KEY, "customer.registered", "email", {**env, "s": "c-2"}),
        (bytes(32), "customer.registered", "email", env),
        (KEY, "customer.registered", "email", {**env, "c": env["c"][:-4] + "AAAA"}),
    ]
    for key, type_name, field, envelope in bad:
        with pytest.raises(DeserializationError):
            open_value(key, type_name, field, envelope)


async def test_encode_and_decode_through_the_registry() -> None:
    """to_event_data seals personal values (None stays None), decode and the fast-path decoder
    open them; after forget both give the placeholders: "[forgotten]" for a str field, None for
    an optional one."""
    ring = KeyRing(MemoryKeyStore())
    registry = _registry(ring)
    event = Customer("c-1", "ada@example.test", "+49 1", 41)
    with pytest.raises(KeyNotLoaded) as info:
        registry.to_event_data(event)
    assert info.value.subject == "c-1"
    await registry.load_keys([event])
    data = registry.to_event_data(event)
    assert isinstance(data.payload, dict)
    assert is_envelope(data.payload["email"]) and data.payload["age"] == 41
    assert registry.to_event_data(Customer("c-1", "x@y.z")).payload["phone"] is None
    async with chronik.open_store("memory://") as store:
        await store.append(chronik.StreamId("customer", "c-1"), [data])
        (stored,) = [e async for e in store.read_all()]
    fast = registry.current_decoders()["customer.registered"][1]
    assert registry.decode(stored) == event == fast(stored.payload)
    await ring.forget("c-1")
    assert registry.decode(stored) == Customer("c-1", FORGOTTEN, None, 41) == fast(stored.payload)
    with pytest.raises(chronik.ValidationError) as refused:
        registry.to_event_data(event)
    assert refused.value.field == "email"


async def test_a_fresh_ring_loads_keys_for_adecode_only() -> None:
    """Another process's registry (empty cache) raises KeyNotLoaded on a sync decode and
    opens the event with ``adecode``; without a ring the envelope does not decode at all."""
    keys = MemoryKeyStore()
    writer = _registry(KeyRing(keys))
    event = Customer("c-1", "ada@example.test")
    await writer.load_keys([event])
    data = writer.to_event_data(event)
    async with chronik.open_store("memory://") as store:
        await store.append(chronik.StreamId("customer", "c-1"), [data])
        (stored,) = [e async for e in store.read_all()]
    reader = _registry(KeyRing(keys))
    with pytest.raises(KeyNotLoaded):
        reader.decode(stored)
    assert await reader.adecode(stored) == event
    with pytest.raises(chronik.UndecodableEvent):
        _registry(None).decode(stored)


def test_dataclasses_can_carry_personal_fields() -> None:
    """A dataclass registers with personal fields like a Struct does."""

    @dataclasses.dataclass
    class Note:
        """A note with personal text."""

        author: str
        text: str | None

    registry = chronik.EventRegistry()
    registry.register(Note, "note.added", personal={"text": "author"})
    assert registry.personal_types() == frozenset({"note.added"})


def _decide(command: chronik.Command, state: dict[str, Any]) -> list[Any]:
    """Register (or change) the email; "Show" rejects with the folded email as its reason."""
    if command.type == "Show":
        raise chronik.CommandRejected(f"email={state.get('email')}")
    return [Customer(command.aggregate_id, command.payload["email"])]


def _evolve(state: dict[str, Any], event: Customer) -> dict[str, Any]:
    """Remember the last email."""
    return {"email": event.email}


async def _shown(app: chronik.Chronik, cid: str) -> str:
    """The email a fresh load of ``cid`` folds to (the repository cache dropped first)."""
    app.bus.repository.clear()
    with pytest.raises(chronik.CommandRejected) as info:
        await app.dispatch(chronik.Command(domain="customer", aggregate_id=cid, type="Show"))
    return str(info.value.reason)


async def test_the_command_path_seals_and_never_snapshots_personal_streams() -> None:
    """Dispatch creates the subject key and stores ciphertext; a reload with an empty key
    cache folds the opened value (keys loaded on the fly); a stream with personal fields is
    never snapshotted (even at every=1); after forget a reload folds the placeholder."""
    app = chronik.Chronik(store="memory://", registry=_registry())
    ring = KeyRing(StoreKeyStore(app.store))
    app.registry.use_keys(ring)
    app.add_decider(
        "customer", decide=_decide, evolve=_evolve, initial=dict, snapshots=chronik.Snapshots(1)
    )
    stream = chronik.StreamId("customer", "c-7")
    async with app:
        for email in ("e0@example.test", "e1@example.test"):
            command = chronik.Command(
                domain="customer", aggregate_id="c-7", type="Register", payload={"email": email}
            )
            await app.dispatch(command)
        stored = [e async for e in app.store.read_stream(stream)]
        assert len(stored) == 2 and all(b"example.test" not in e.payload for e in stored)
        ring.clear()
        assert await _shown(app, "c-7") == "email=e1@example.test"
        await app.bus.repository.drain()
        assert await app.store.load_snapshot(stream) is None
        await ring.forget("c-7")
        assert await _shown(app, "c-7") == f"email={FORGOTTEN}"
