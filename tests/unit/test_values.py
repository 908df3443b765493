"""The value rule (chronik.codec): what JSON travels, what is refused at every edge, by field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chronik
from chronik.codec import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    check_json_value,
    decode_json,
    encode_json,
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"amount": 10**23}, "payload.amount", "int64"),
        ({"amount": INT64_MAX + 1}, "payload.amount", "int64"),
        ({"amount": INT64_MIN - 1}, "payload.amount", "int64"),
        ({"items": [{"qty": 1}, {"qty": float("nan")}]}, "payload.items[1].qty", "NaN"),
        ({"x": float("inf")}, "payload.x", "Infinity"),
        ({"x": -float("inf")}, "payload.x", "Infinity"),
        ({"name": "a\ud800b"}, "payload.name", "lone surrogate"),
        ({"bad\udfff": 1}, "payload.bad\udfff", "lone surrogate"),
        ({"deep": nested(MAX_JSON_DEPTH)}, "payload.deep" + "[0]" * (MAX_JSON_DEPTH - 1), "deeper"),
        ({"odd": {1, 2}}, "payload.odd", "not a JSON value"),
    ],
)
def test_values_out_of_the_rule_are_refused_naming_the_field(
    value: Any, field: str, reason: str
) -> None:
    """Each value that some store, column or client cannot hold is InvalidValue naming its path."""
    with pytest.raises(chronik.InvalidValue, match=reason) as caught:
        check_json_value(value, "payload")
    assert caught.value.field == field
    assert isinstance(caught.value, chronik.ValidationError)


def test_values_within_the_rule_pass() -> None:
    """int64 bounds, finite floats, depth 64, astral characters and escapes all travel."""
    check_json_value(
        {
            "lo": INT64_MIN,
            "hi": INT64_MAX,
            "f": 1.5e300,
            "t": True,
            "n": None,
            "emoji": "\U0001f600 é",
            "deep": nested(MAX_JSON_DEPTH - 1),
        }
    )
    assert decode_json(b'{"e": "\\ud83d\\ude00"}') == {"e": "\U0001f600"}


@pytest.mark.parametrize(
    ("raw", "field", "error"),
    [
        (b'{"amount": 99999999999999999999999}', "payload.amount", chronik.InvalidValue),
        (b'{"amount": NaN}', "payload.amount", chronik.InvalidValue),
        (b'{"amount": -Infinity}', "payload.amount", chronik.InvalidValue),
        (b'{"amount": 1e999}', "payload.amount", chronik.InvalidValue),
        (b'{"name": "\\ud800"}', "payload.name", chronik.InvalidValue),
        (b"[" * 100_000 + b"]" * 100_000, "payload", chronik.InvalidValue),
        (b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}", "payload", chronik.InvalidValue),
        (b'{"a": "\xff"}', "payload", chronik.SerializationError),
        (b"{not json", "payload", chronik.SerializationError),
    ],
)
def test_decode_json_refuses_by_field_and_never_recurses(
    raw: bytes, field: str, error: type[Exception]
) -> None:
    """Raw JSON out of the rule (huge int, NaN, 1e999, lone surrogate, 100k nesting) is a typed
    error naming the field; a RecursionError never escapes."""
    with pytest.raises(error) as caught:
        decode_json(raw, "payload")
    assert getattr(caught.value, "field", None) == field
    assert "truncated" not in str(caught.value)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    """Depth is measured on structure, not on bracket characters inside strings."""
    text = "[{" * 200
    assert decode_json(b'{"s": "' + text.encode() + b'", "q": "\\"["}') == {"s": text, "q": '"['}


def test_encode_json_checks_structs_and_dataclasses() -> None:
    """Python values are checked before they are encoded: NaN is refused, not turned into null."""

    @dataclasses.dataclass
    class Reading:
        value: float

    assert encode_json(Reading(1.5)) == b'{"value":1.5}'
    with pytest.raises(chronik.InvalidValue) as caught:
        encode_json(Reading(float("nan")), "payload")
    assert caught.value.field == "payload.value"


async def _refused_appends(store: chronik.EventStore) -> None:
    stream = chronik.StreamId("account", "a1")
    bad: list[tuple[chronik.EventData, str]] = [
        (chronik.EventData("counted", {"n": 10**30}), "payload.n"),
        (chronik.EventData("counted", b'{"n": 100000000000000000000}'), "payload.n"),
        (chronik.EventData("counted", {"r": float("nan")}), "payload.r"),
        (chronik.EventData("counted", b'{"s": "\\udc00"}'), "payload.s"),
        (chronik.EventData("counted", b"[" * 10_000 + b"]" * 10_000), "payload"),
        (chronik.EventData("counted", {"n": 1}, {"note": "x\ud800"}), "metadata.note"),
    ]
    for event, field in bad:
        with pytest.raises(chronik.InvalidValue) as caught:
            await store.append(stream, [event])
        assert caught.value.field == field
    assert await store.head() is None  # nothing half-written
    result = await store.append(stream, [chronik.EventData("counted", {"n": INT64_MAX})])
    assert result.last_sequence == 0  # the store still works


async def test_store_append_refuses_values_out_of_the_rule_in_memory() -> None:
    """An embedded append (memory) refuses out-of-rule payloads and metadata by field."""
    async with chronik.open_store("memory://") as store:
        await _refused_appends(store)


async def test_store_append_refuses_values_out_of_the_rule_in_sqlite(tmp_path: Path) -> None:
    """An embedded append (SQLite) refuses them the same way; the store keeps working."""
    async with chronik.open_store(f"sqlite:///{tmp_path / 'v.db'}") as store:
        await _refused_appends(store)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN - 2, max_value=INT64_MAX + 2),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
)


def _outcome(encode: Any, v: Any) -> tuple[str, Any]:
    try:
        return "ok", encode(v, "payload")
    except chronik.ValidationError as exc:
        return type(exc).__name__, (exc.field, str(exc))


def _general(v: Any, field: str) -> bytes:
    """encode_json without its fast paths: the copy to builtins, the walk, then the bytes."""
    plain = msgspec.to_builtins(v)
    check_json_value(plain, field)
    return msgspec.json.encode(plain)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.one_of(st.text(), st.integers()), _SCALARS, max_size=6))
def test_a_flat_dict_encodes_as_the_general_path_encodes_it(value: dict[Any, Any]) -> None:
    """encode_json's flat-dict fast path gives the general path's bytes, or its refusal
    naming the same field with the same reason."""
    assert _outcome(encode_json, value) == _outcome(_general, value)


class _Row(msgspec.Struct):
    a: Any
    b: Any


@settings(max_examples=400, deadline=None)
@given(_SCALARS, _SCALARS)
def test_a_struct_of_scalars_encodes_as_the_general_path_encodes_it(a: Any, b: Any) -> None:
    """A Struct whose fields are scalars (no walk once it is a flat dict) gives the general
    path's bytes, or its refusal naming the same field with the same reason."""
    assert _outcome(encode_json, _Row(a, b)) == _outcome(_general, _Row(a, b))


def test_event_type_names_are_checked_after_valid_ones_were_remembered() -> None:
    """Valid type names are remembered (cheap to check again); a bad name, or a valid name
    given as a non-str, is still refused naming ``type``."""
    store = chronik.open_store("memory://")
    for good in ("order.placed", "order.placed"):
        store.prepare(chronik.StreamId("o", "1"), [chronik.EventData(good, {})], chronik.ANY)
    for bad in ("order placed", "", "9lives", b"order.placed"):
        with pytest.raises(chronik.InvalidEventType) as caught:
            store.prepare(chronik.StreamId("o", "1"), [chronik.EventData(bad, {})], chronik.ANY)  # type: ignore[arg-type]
        assert caught.value.field == "type"
