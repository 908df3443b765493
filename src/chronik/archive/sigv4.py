"""AWS Signature Version 4 for S3 requests (header-signed, payload hash in
``x-amz-content-sha256``), written from the AWS documentation; standard library only."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = ["canonical_query", "sign"]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str, safe: str) -> str:
    return quote(text, safe=safe)


def canonical_query(query: Mapping[str, str]) -> str:
    """The query string as SigV4 signs it (sorted, every reserved character %-encoded); send
    the same string so that what was signed is what the server sees."""
    return "&".join(f"{_quote(k, '~')}={_quote(v, '~')}" for k, v in sorted(query.items()))


def sign(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    payload: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    service: str = "s3",
) -> dict[str, str]:
    """The headers (``host``, ``x-amz-date``, ``x-amz-content-sha256``, ``authorization`` and
    the given ``headers``, all signed) of a request of ``method`` to ``path`` (not yet
    URI-encoded) with ``query``."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = when[:8]
    payload_hash = hashlib.sha256(payload).hexdigest()
    out = {k.lower(): v for k, v in (headers or {}).items()}
    out.update({"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": when})
    signed = ";".join(sorted(out))
    canonical = "\n".join(
        [
            method,
            _quote(path, "/~"),
            "&".join(f"{_quote(k, '~')}={_quote(v, '~')}" for k, v in sorted(query.items())),
            "".join(f"{k}:{out[k].strip()}\n" for k in sorted(out)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", when, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out
