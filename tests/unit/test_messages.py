"""Unit tests of the core value types."""

from __future__ import annotations

import base64
import gc
import pickle
import re
from datetime import UTC, datetime

import msgspec
import pytest

import chronik
from chronik.messages import EMPTY_METADATA

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_event_ids_are_uuid7_unique_and_sorted_in_creation_order() -> None:
    """new_event_id gives version-7, variant-10 UUIDs that sort in creation order."""
    ids = [chronik.new_event_id() for _ in range(20_000)]
    assert all(UUID7.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_event_id_timestamp_is_now() -> None:
    """The first 48 bits of an event id are the current Unix time in milliseconds."""
    ms = int(chronik.new_event_id().replace("-", "")[:12], 16)
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert abs(ms - now_ms) < 5_000


def test_event_data_gets_its_id_at_construction() -> None:
    """Each EventData gets its own id when made, so re-appending the same object is a retry."""
    a = chronik.EventData("x.happened", {"n": 1})
    b = chronik.EventData("x.happened", {"n": 1})
    assert a.event_id != b.event_id
    assert UUID7.fullmatch(a.event_id)
    assert a.schema_version == 1 and a.content_type == chronik.JSON


@pytest.mark.parametrize(
    ("domain", "aggregate_id", "tenant"),
    [
        ("", "a", ""),
        ("Customer", "a", ""),
        ("1customer", "a", ""),
        ("c" * 65, "a", ""),
        ("customer", "", ""),
        ("customer", "x" * 257, ""),
        ("customer", "a\nb", ""),
        ("customer", "a\x00", ""),
        ("customer", "a", "Tenant"),
        ("customer", "a", "-t"),
    ],
)
def test_stream_id_rejects_bad_names(domain: str, aggregate_id: str, tenant: str) -> None:
    """StreamId refuses out-of-shape domains, aggregate ids and tenants with InvalidStreamId."""
    with pytest.raises(chronik.InvalidStreamId):
        chronik.StreamId(domain, aggregate_id, tenant)


def test_stream_id_accepts_and_parses() -> None:
    """Valid names are accepted; str() and parse() round-trip, with or without a tenant."""
    s = chronik.StreamId("order.v2", "ord 17/β", "acme")
    assert chronik.StreamId.parse(str(s)) == s
    plain = chronik.StreamId("customer", "x" * 256)
    assert str(plain) == "customer/" + "x" * 256
    assert chronik.StreamId.parse("customer/cust-1") == chronik.StreamId("customer", "cust-1")
    with pytest.raises(chronik.InvalidStreamId):
        chronik.StreamId.parse("no-slash")


def test_stream_id_rejects_non_strings() -> None:
    """A non-string domain or id is a typed error, not a TypeError."""
    with pytest.raises(chronik.InvalidStreamId):
        chronik.StreamId(1, "a")  # type: ignore[arg-type]
    with pytest.raises(chronik.InvalidStreamId):
        chronik.StreamId("a", 5)  # type: ignore[arg-type]


def test_positions_order_and_round_trip() -> None:
    """Positions compare in (commit, index) order and round-trip through text."""
    a, b, c = chronik.Position(5), chronik.Position(5, 2), chronik.Position(6)
    assert a < b < c
    for p in (a, b, c):
        assert chronik.Position.parse(str(p)) == p
    with pytest.raises(chronik.ValidationError):
        chronik.Position.parse("five")


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "1:-1",
        "100000000000000000000",
        "9223372036854775808",
        "1:9223372036854775808",
        "",
        "1:",
        ":1",
        "1:2:3",
        " 1",
        "1.5",
        "\u0661\u0662",  # Arabic-Indic digits: isdigit() but not a position
        "\u00b2",
        "9" * 5000,
    ],
)
def test_position_parse_refuses_what_no_store_holds(text: str) -> None:
    """Negative, beyond int64, non-ASCII digits or garbage: ValidationError naming the field."""
    with pytest.raises(chronik.ValidationError) as caught:
        chronik.Position.parse(text, "after")
    assert caught.value.field == "after" and "after" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_position_parse_accepts_the_int64_range() -> None:
    """0 and 2**63-1 (each part) parse; the default field is "position"."""
    top = 2**63 - 1
    assert chronik.Position.parse(f"{top}:{top}") == chronik.Position(top, top)
    assert chronik.Position.parse("0") == chronik.Position(0)
    with pytest.raises(chronik.ValidationError) as caught:
        chronik.Position.parse("x")
    assert caught.value.field == "position"


def test_metadata_is_an_immutable_string_mapping() -> None:
    """Metadata names correlation and causation ids, keeps extra keys, and cannot be changed."""
    md = chronik.Metadata({"user": "ada"}, correlation_id="c-1", causation_id="cmd-1")
    assert md.correlation_id == "c-1" and md.causation_id == "cmd-1" and md["user"] == "ada"
    assert dict(md) == {"user": "ada", "correlation_id": "c-1", "causation_id": "cmd-1"}
    assert md.with_values(user="bob")["user"] == "bob" and md["user"] == "ada"
    with pytest.raises(AttributeError):
        md.x = "y"  # type: ignore[attr-defined]
    with pytest.raises(chronik.ValidationError):
        chronik.Metadata({"n": 1})  # type: ignore[dict-item]
    assert chronik.Metadata.of(None) is EMPTY_METADATA
    assert EMPTY_METADATA.correlation_id is None


def test_recorded_event_decodes_lazily() -> None:
    """A RecordedEvent decodes its payload, metadata and timestamp on access."""
    e = chronik.RecordedEvent(
        "id-1",
        chronik.StreamId("a", "b"),
        0,
        "t",
        1,
        b'{"k": [1, 2]}',
        chronik.Position(1),
        1_700_000_000_000_000,
        b'{"correlation_id": "c"}',
    )
    assert e.json() == {"k": [1, 2]}
    assert e.metadata.correlation_id == "c"
    assert e.recorded_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    with pytest.raises(AttributeError):
        e.sequence = 2  # type: ignore[misc]
    assert msgspec.structs.replace(e, raw_metadata=None).metadata is EMPTY_METADATA


def test_recorded_events_are_plain_values_outside_the_garbage_collector() -> None:
    """RecordedEvent and Position are not GC-tracked (gc=False) yet still compare, hash,
    pickle, encode and replace like any frozen msgspec value."""
    e = chronik.RecordedEvent(
        "id-1", chronik.StreamId("a", "b"), 3, "t", 1, b'{"k": 1}', chronik.Position(7), 5
    )
    assert not gc.is_tracked(e) and not gc.is_tracked(e.position)
    copy = pickle.loads(pickle.dumps(e))
    assert copy == e and hash(copy) == hash(e) and copy.position < chronik.Position(8)
    assert msgspec.json.decode(msgspec.json.encode(e), type=chronik.RecordedEvent) == e
    assert msgspec.structs.replace(e, sequence=4) != e
    assert e.json() == {"k": 1} and e.to_dict()["position"] == "7"


def test_a_stored_payload_that_is_not_json_is_listed_not_raised() -> None:
    """to_dict of an event whose JSON payload does not parse (stored by an older writer) shows
    it as base64 with the reason, so one bad event never breaks a listing."""
    bad = b'{"k": "\\ud800"}'
    e = chronik.RecordedEvent(
        "id-1", chronik.StreamId("a", "b"), 0, "t", 1, bad, chronik.Position(1), 0, None
    )
    d = e.to_dict()
    assert base64.b64decode(d["payload"]) == bad and d["payload_error"].startswith("not JSON")


def test_expected_states_are_distinct_and_named() -> None:
    """ANY, NO_STREAM and STREAM_EXISTS are distinct sentinels that print their names."""
    assert len({chronik.ANY, chronik.NO_STREAM, chronik.STREAM_EXISTS}) == 3
    assert str(chronik.NO_STREAM) == "NO_STREAM"
