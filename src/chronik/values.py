"""The value rule: which JSON values chronik carries, checked once for every edge.

One rule for every edge (HTTP, gRPC, store appends): a JSON value travels only if every place
it can go holds it (PostgreSQL JSONB, SQLite and read-model columns, snapshots, JSON clients).
``check_json_value`` checks a decoded value, ``decode_json`` decodes bytes safely (depth
checked before parsing, so no RecursionError) and ``encode_json`` encodes a value (dict, list,
dataclass, Struct) after checking it. Refusals are ``InvalidValue`` naming the field path
(``payload.items[2].qty``):

- integers must fit int64 (-2**63 .. 2**63-1);
- floats must be finite (NaN and Infinity are not JSON);
- nesting at most ``MAX_JSON_DEPTH`` (64) objects/arrays deep;
- strings and keys valid Unicode without lone surrogates (so they encode as UTF-8);
- sizes are bounded by the edge's body limit and the store's ``max_payload_bytes``.

``chronik.codec`` re-exports these names; HTTP, gRPC and the stores' append all use them.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any, Final

import msgspec

from chronik.errors import InvalidValue, SerializationError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "check_json_value",
    "decode_json",
    "encode_json",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_JSON_DEPTH: Final = 64
_NAMED_DEPTH: Final = 200  # parsed (safely) to name the deep field; deeper: refused unparsed
_encoder = msgspec.json.Encoder()
_SEQUENCES: Final = (list, tuple)  # a tuple: ``list | tuple`` makes a union per call
_any_decoder = msgspec.json.Decoder()
_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# bracket bytes -> +1 / -1 (as signed bytes), every other byte deleted
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str | int] = []


def _plain(item: Any) -> bool:
    """Whether ``item`` is a scalar that passes the rule (the common case, checked inline)."""
    t = type(item)
    if t is str:
        return item.isascii()  # type: ignore[no-any-return]
    if t is int:
        return INT64_MIN <= item <= INT64_MAX  # type: ignore[no-any-return]
    if t is float:
        return math.isfinite(item)
    return item is None or t is bool


def _walk(value: Any, depth: int) -> None:
    if isinstance(value, dict):
        if depth >= MAX_JSON_DEPTH:
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for key, item in value.items():
            if type(key) is str and key.isascii() and _plain(item):
                continue
            try:
                if not isinstance(key, str):
                    raise _Bad(f"object key {key!r} is not a string")
                _check_text(key)
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.path.append(str(key))
                raise
    elif isinstance(value, _SEQUENCES):
        if depth >= MAX_JSON_DEPTH:
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for index, item in enumerate(value):
            if _plain(item):
                continue
            try:
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.path.append(index)
                raise
    elif isinstance(value, str):
        _check_text(value)
    elif value is None or isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Bad(f"integer {_short(value)} does not fit in 64 bits (int64)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            shown = "NaN" if value != value else "Infinity"
            raise _Bad(f"{shown} is not a JSON number")
    else:
        raise _Bad(f"{type(value).__name__} is not a JSON value")


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Bad(f"text has a lone surrogate {text[exc.start]!r} at index {exc.start}") from None


def _short(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"


def _join(field: str, path: list[str | int]) -> str:
    out = field
    for part in reversed(path):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def check_json_value(value: Any, field: str = "") -> None:
    """InvalidValue naming the path below ``field`` unless ``value`` (decoded JSON: dict, list,
    str, int, float, bool, None) travels everywhere; see the module docstring for the rule."""
    try:
        _walk(value, 0)
    except _Bad as bad:
        raise InvalidValue(_join(field, bad.path), bad.reason) from None


def _check_depth(data: bytes, field: str) -> None:
    """Refuse nesting far beyond the limit before a parser recurses into it (up to
    _NAMED_DEPTH, the value is parsed so that the rule names the path of the deep part)."""
    if data.count(b"[") + data.count(b"{") <= _NAMED_DEPTH:
        return
    brackets = _STRING_RE.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    if brackets and max(accumulate(memoryview(brackets).cast("b"))) > _NAMED_DEPTH:
        raise InvalidValue(field, f"nested deeper than {MAX_JSON_DEPTH} levels")


def decode_json(data: bytes | bytearray | memoryview | str, field: str = "") -> Any:
    """JSON text decoded into builtins, checked by the value rule (depth before parsing).

    Refusals are InvalidValue (a value out of the rule, with its path) or SerializationError
    (not JSON at all), both naming ``field`` (its root; the paths continue below it).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    _check_depth(raw, field)
    try:
        value = _any_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # msgspec says "Input data was truncated" for a lone surrogate and "Number out of
        # range" for 1e999: the standard parser accepts both, so the rule can name the field
        try:
            lax = json.loads(raw)
        except (ValueError, RecursionError):
            lax = None
        else:
            check_json_value(lax, field)
        where = f"{field}: " if field else ""
        raise SerializationError(f"{where}not valid JSON: {exc}", field=field or None) from None
    except UnicodeDecodeError as exc:
        where = f"{field}: " if field else ""
        raise SerializationError(f"{where}not valid UTF-8: {exc}", field=field or None) from None
    check_json_value(value, field)
    return value


def _flat(value: dict[Any, Any]) -> bool:
    """Whether a dict is flat: ASCII string keys and plain scalars that pass the rule (the
    common payload, settled without the walk: msgspec encodes it as it is)."""
    for key, item in value.items():
        if type(key) is not str or not key.isascii() or not _plain(item):
            return False
    return True


def encode_json(value: Any, field: str = "") -> bytes:
    """``value`` (builtins, dataclass, Struct) as JSON bytes, after the value rule checked it."""
    if type(value) is dict and _flat(value):  # no copy to builtins, no walk
        return _encoder.encode(value)
    try:
        plain = msgspec.to_builtins(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        where = f"{field}: " if field else ""
        raise SerializationError(
            f"{where}cannot be encoded as JSON: {exc}", field=field or None
        ) from None
    if type(plain) is not dict or not _flat(plain):  # a Struct of plain fields: no walk
        check_json_value(plain, field)
    return _encoder.encode(plain)
