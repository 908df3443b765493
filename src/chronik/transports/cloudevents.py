"""The CloudEvents transport: each message POSTed to an HTTP endpoint as a CloudEvent (Knative).

``cloudevents+http://host:port/path?mode=binary`` (or ``cloudevents+https://``; ``mode=structured``
sends ``application/cloudevents+json``). Options, in the query or as keywords: ``mode``
(binary), ``source`` (``chronik://<hostname>``), ``content_type`` (``application/json``: the
``datacontenttype`` of messages without a ``content-type`` header), ``timeout`` (10 s),
``retries`` (3), ``backoff`` (0.2 s, doubling) and ``api_key_env`` (an environment variable
whose value is sent as ``x-api-key``, for a chronik receiver with auth). Other query parameters
stay in the target URL. Needs the ``cloudevents`` extra (the SDK and httpx).

A message becomes a CloudEvent 1.0 (built by the ``cloudevents`` SDK): ``id`` = message id,
``source`` = the configured source, ``type`` = topic, ``subject`` and the ``partitionkey``
extension = the ordering key, ``datacontenttype`` = the ``content-type`` header, the data =
the body bytes (``data_base64`` in structured mode). ``correlation-id`` / ``causation-id``
travel as the ``correlationid`` / ``causationid`` extensions; other headers whose names are
valid extension names travel as themselves, the rest in one ``chronikheaders`` extension (a
JSON object), so a chronik receiver (``chronik.transports.cloudevents_receiver``) rebuilds the
very message.

Guarantees: at least once. ``publish`` (and ``send``: a push endpoint has no queues, both POST)
returns once the endpoint answered 2xx; a 5xx, 408, 429, a connection error or a timeout is
retried with the same CloudEvent id, then raises TransportUnavailable (outcome unknown: retry
with the same message, the receiver dedupes by id). Other answers are final: 401
AuthenticationError, 403 PermissionDenied, any other 4xx InvalidMessage (with the receiver's
``field``). Ordering: none across POSTs beyond what the caller waits for: one publisher awaiting
each publish delivers in order to the endpoint, but a broker may fan out concurrently (the key
is in ``subject`` / ``partitionkey`` for brokers that order by it). Push only: ``subscribe`` and
``listen`` raise ConfigurationError; consumers run on the receiving server's transport.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from chronik.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidMessage,
    MissingExtraError,
    PermissionDenied,
    TransportClosed,
    TransportUnavailable,
)
from chronik.transports.base import CAUSATION_ID, CORRELATION_ID, Message, Transport
from chronik.transports.source import Source

try:
    import httpx
except ImportError:  # pragma: no cover - the extra installs both
    raise MissingExtraError("cloudevents", "httpx") from None
try:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent, from_http
except ImportError:  # pragma: no cover - cloudevents 1.x, or none
    try:
        from cloudevents.conversion import (  # type: ignore[no-redef,import-not-found]
            to_binary,
            to_structured,
        )
        from cloudevents.http import (  # type: ignore[no-redef,import-not-found]
            CloudEvent,
            from_http,
        )
    except ImportError:
        raise MissingExtraError("cloudevents", "cloudevents") from None

__all__ = [
    "CAUSATION_EXT",
    "CORRELATION_EXT",
    "CONTEXT_ATTRIBUTES",
    "CloudEvent",
    "CloudEventsTransport",
    "HEADERS_EXT",
    "PARTITION_EXT",
    "from_http",
    "to_cloudevent",
    "to_http",
]

CORRELATION_EXT: Final = "correlationid"
CAUSATION_EXT: Final = "causationid"
HEADERS_EXT: Final = "chronikheaders"
PARTITION_EXT: Final = "partitionkey"
#: the CloudEvents 1.0 context attributes (never a chronik header's extension name)
CONTEXT_ATTRIBUTES: Final = frozenset(
    {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"}
)
_RESERVED: Final = CONTEXT_ATTRIBUTES | {
    "data",
    "data_base64",
    CORRELATION_EXT,
    CAUSATION_EXT,
    HEADERS_EXT,
    PARTITION_EXT,
}
_EXT_NAME = re.compile(r"[a-z][a-z0-9]{0,19}")
_OPTIONS: Final = ("mode", "source", "content_type", "timeout", "retries", "backoff", "api_key_env")
_RETRY_STATUS: Final = frozenset({408, 425, 429})
_json = msgspec.json.Encoder()


def to_cloudevent(message: Message, source: str, content_type: str) -> CloudEvent:
    """The CloudEvent for ``message`` (see the module docstring for the mapping)."""
    headers = dict(message.headers)
    attributes: dict[str, Any] = {
        "id": message.id,
        "source": source,
        "type": message.topic,
        "datacontenttype": headers.pop("content-type", "") or content_type,
    }
    if message.key is not None:
        attributes["subject"] = message.key
        attributes[PARTITION_EXT] = message.key
    for name, ext in ((CORRELATION_ID, CORRELATION_EXT), (CAUSATION_ID, CAUSATION_EXT)):
        if name in headers:
            attributes[ext] = headers.pop(name)
    packed = {}
    for name, value in headers.items():
        if _EXT_NAME.fullmatch(name) and name not in _RESERVED:
            attributes[name] = value
        else:
            packed[name] = value
    if packed:
        attributes[HEADERS_EXT] = _json.encode(packed).decode()
    return CloudEvent(attributes, message.body)


def to_http(
    message: Message,
    mode: Literal["binary", "structured"] = "binary",
    *,
    source: str = "",
    content_type: str = "application/json",
) -> tuple[dict[str, str], bytes]:
    """The HTTP headers and body of ``message`` as a CloudEvent in ``mode``."""
    event = to_cloudevent(message, source or default_source(), content_type)
    headers, body = to_binary(event) if mode == "binary" else to_structured(event)
    return dict(headers), bytes(body)


def default_source() -> str:
    """``chronik://<hostname>``: the default CloudEvent source."""
    return f"chronik://{socket.gethostname() or 'localhost'}"


class CloudEventsTransport(Transport):
    """POSTs messages as CloudEvents to one endpoint (a Knative broker ingress, a chronik
    receiver, any CloudEvents sink); see the module docstring."""

    scheme = "cloudevents+http"

    def __init__(
        self,
        url: str,
        *,
        mode: str = "binary",
        source: str = "",
        content_type: str = "application/json",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        api_key_env: str = "",
        **options: int,
    ) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        if parts.scheme not in ("cloudevents+http", "cloudevents+https") or not parts.netloc:
            raise ConfigurationError(
                f"invalid CloudEvents URL {url!r}: cloudevents+http(s)://host[:port]/path"
            )
        given: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (given.__setitem__(key, value) if key in _OPTIONS else rest.append((key, value)))
        try:
            self.timeout = float(given.get("timeout", timeout))
            self.retries = int(given.get("retries", retries))
            self.backoff = float(given.get("backoff", backoff))
        except ValueError:
            raise ConfigurationError(f"invalid timeout, retries or backoff in {url!r}") from None
        mode = given.get("mode", mode)
        if mode not in ("binary", "structured"):
            raise ConfigurationError(f"mode must be binary or structured, not {mode!r}")
        self.mode: Literal["binary", "structured"] = "binary" if mode == "binary" else "structured"
        if not 0 < self.timeout <= 600 or not 0 <= self.retries <= 100 or self.backoff < 0:
            raise ConfigurationError("need 0 < timeout <= 600, retries 0..100, backoff >= 0")
        self.source = given.get("source", source) or default_source()
        self.content_type = given.get("content_type", content_type)
        self.api_key_env = given.get("api_key_env", api_key_env)
        scheme = parts.scheme.removeprefix("cloudevents+")
        self.target = urlunsplit((scheme, parts.netloc, parts.path or "/", urlencode(rest), ""))
        self._client: httpx.AsyncClient | None = None

    async def _open(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout)

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _publish(self, message: Message) -> None:
        await self._post(message)

    async def _send(self, message: Message) -> None:
        await self._post(message)

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        raise ConfigurationError(
            "a CloudEvents transport only pushes: consume on the receiving server's transport"
        )

    async def _post(self, message: Message) -> None:
        client = self._client
        if client is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        headers, body = to_http(
            message, self.mode, source=self.source, content_type=self.content_type
        )
        if not all(value.isascii() for value in headers.values()):
            raise InvalidMessage(
                f"message {message.id}: binary mode carries ASCII header values only "
                "(use mode=structured)",
                field="headers",
            )
        if self.api_key_env:
            headers["x-api-key"] = os.environ.get(self.api_key_env, "")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
            try:
                response = await client.post(self.target, content=body, headers=headers)
            except httpx.HTTPError as exc:  # connection refused or reset, timeout
                problem = f"{type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if 200 <= status < 300:
                return
            if status >= 500 or status in _RETRY_STATUS:
                problem = f"HTTP {status}"
                continue
            raise _refused(self.target, message, response)
        raise TransportUnavailable(
            f"CloudEvents endpoint {self.target} did not accept message {message.id} after "
            f"{self.retries + 1} attempts ({problem})",
            outcome_unknown=True,
        )


def _refused(target: str, message: Message, response: httpx.Response) -> Exception:
    """The final error for a 4xx answer (with the receiver's problem detail and field)."""
    detail, field = response.text[:500], None
    if "json" in response.headers.get("content-type", ""):
        try:
            doc = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            doc = None
        if isinstance(doc, dict):
            detail = str(doc.get("detail", detail))
            field = doc.get("field") if isinstance(doc.get("field"), str) else None
    text = f"{target} refused message {message.id} ({response.status_code}): {detail}"
    if response.status_code == 401:
        return AuthenticationError(text)
    if response.status_code == 403:
        return PermissionDenied(text)
    return InvalidMessage(text, field=field)
