"""What the HTTP gateway accepts: command bodies and query parameters, checked at the edge.

Every refusal is a ValidationError (400) naming the field: a body value out of chronik's value
rule (``chronik.codec``: int64, finite numbers, depth, no lone surrogates) as its path such as
``payload.amount``, a query parameter by its name.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any, Final, TypeVar

import msgspec
from starlette.datastructures import QueryParams

from chronik.codec import INT64_MAX, decode_json
from chronik.errors import InvalidValue, SerializationError, ValidationError
from chronik.messages import DOMAIN_RE, TYPE_NAME_RE, Command, Position

__all__ = [
    "MAX_LIMIT",
    "WAIT_TIMEOUT",
    "WAIT_TIMEOUT_MAX",
    "backward",
    "convert_body",
    "domains",
    "limit",
    "live_start",
    "parse_command",
    "position",
    "sequence",
    "text",
    "types",
    "wait_timeout",
]

MAX_LIMIT: Final = 1000
WAIT_TIMEOUT: Final = 10.0
WAIT_TIMEOUT_MAX: Final = 60.0
OFF_LOOP_BYTES: Final = 64 * 1024  # bodies this large are decoded and checked in a thread
_AT_RE: Final = re.compile(r"at `\$\.?([^`]*)`")
B = TypeVar("B")


class _CommandBody(msgspec.Struct, forbid_unknown_fields=True):
    domain: str
    aggregate_id: str
    type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    command_id: str | None = None
    metadata: dict[str, str] | None = None
    expected_sequence: int | None = None
    tenant: str = ""


def convert_body(data: bytes, shape: type[B], what: str = "body") -> B:
    """A JSON request body as ``shape``: the value rule first, then the shape; a refusal names
    the field (a path such as ``events[0].payload.amount``, else ``body``)."""
    try:
        value = decode_json(data)
    except InvalidValue as exc:
        if exc.field:
            raise
        raise InvalidValue("body", exc.reason) from None
    except SerializationError as exc:
        raise SerializationError(f"invalid {what}: {exc}", field="body") from None
    try:
        return msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        at = _AT_RE.search(str(exc))
        field = at.group(1) if at and at.group(1) else "body"
        raise ValidationError(f"invalid {what}: {exc}", field=field) from None


def _command(data: bytes) -> Command:
    body = convert_body(data, _CommandBody, "command body")
    if body.expected_sequence is not None and body.expected_sequence < 0:
        raise ValidationError("expected_sequence must be >= 0", field="expected_sequence")
    return Command(
        domain=body.domain,
        aggregate_id=body.aggregate_id,
        type=body.type,
        payload=body.payload,
        command_id=body.command_id,
        metadata=body.metadata,
        expected_sequence=body.expected_sequence,
        tenant=body.tenant,
    )


async def parse_command(data: bytes) -> Command:
    """The command of a POST /v1/commands body (large bodies checked off the event loop)."""
    if len(data) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(_command, data)
    return _command(data)


def limit(q: QueryParams, default: int = 100) -> int:
    """``?limit=``: 1..MAX_LIMIT."""
    raw = q.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_LIMIT:
        raise ValidationError(f"invalid limit {raw[:32]!r}: expected 1..{MAX_LIMIT}", field="limit")
    return int(raw)


def position(text: str | None, field: str) -> Position | None:
    """A position parameter (absent: None; present, it must be a position, even empty)."""
    return None if text is None else Position.parse(text, field)


def live_start(q: QueryParams, last_event_id: str | None) -> tuple[bool, Position | None]:
    """Where an event stream starts: ``(at_head, after)``.

    ``Last-Event-ID`` (a reconnecting client) wins over the query; then ``?after=POSITION``;
    then ``?from=start`` (the beginning) or ``?from=now`` (the default: the current head).
    """
    start = q.get("from")
    if start is not None and start not in ("start", "now"):
        raise ValidationError(f"invalid from {start[:32]!r}: expected start or now", field="from")
    if last_event_id:
        return False, position(last_event_id, "Last-Event-ID")
    after = position(q.get("after"), "after")
    if after is not None:
        if start is not None:
            raise ValidationError("give either from or after, not both", field="from")
        return False, after
    return start != "start", None


def backward(q: QueryParams) -> bool:
    """``?order=asc`` (default) or ``desc``."""
    order = q.get("order")
    if order not in (None, "asc", "desc"):
        raise ValidationError(f"invalid order {order[:32]!r}: expected asc or desc", field="order")
    return order == "desc"


def domains(q: QueryParams) -> list[str] | None:
    """``?domain=`` (repeatable): each a domain name."""
    found = q.getlist("domain")
    for d in found:
        if not DOMAIN_RE.fullmatch(d):
            raise ValidationError(
                f"invalid domain {d[:70]!r}: expected [a-z][a-z0-9_.-]{{0,63}}", field="domain"
            )
    return found or None


def types(q: QueryParams) -> list[str] | None:
    """``?type=`` (repeatable): each an event type name."""
    found = q.getlist("type")
    for t in found:
        if not TYPE_NAME_RE.fullmatch(t):
            raise ValidationError(f"invalid event type {t[:130]!r}", field="type")
    return found or None


def wait_timeout(q: QueryParams) -> float | None:
    """Seconds to wait for projections (``?wait=projections``, ``wait_timeout=``), or None."""
    wait = q.get("wait")
    raw = q.get("wait_timeout")
    if wait is None:
        if raw is not None:
            raise ValidationError("wait_timeout needs wait=projections", field="wait_timeout")
        return None
    if wait != "projections":
        raise ValidationError(f"invalid wait {wait[:32]!r}: expected projections", field="wait")
    if raw is None:
        return WAIT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= WAIT_TIMEOUT_MAX:  # NaN fails this too
        raise ValidationError(
            f"invalid wait_timeout {raw[:32]!r}: expected seconds, 0 < t <= {WAIT_TIMEOUT_MAX:g}",
            field="wait_timeout",
        )
    return seconds


def sequence(q: QueryParams, name: str) -> int | None:
    """A stream sequence parameter: 0..2**63-1."""
    raw = q.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > INT64_MAX:
        raise ValidationError(f"invalid {name} {raw[:32]!r}: expected 0..{INT64_MAX}", field=name)
    return int(raw)


def text(q: QueryParams, name: str, max_length: int = 256) -> str | None:
    """A free-text parameter: printable, at most ``max_length`` characters (empty: None)."""
    raw = q.get(name)
    if not raw:
        return None
    if len(raw) > max_length or not raw.isprintable():
        raise ValidationError(
            f"invalid {name}: expected at most {max_length} printable characters", field=name
        )
    return raw
