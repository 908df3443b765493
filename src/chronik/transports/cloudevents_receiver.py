"""Receiving CloudEvents: parse and check one HTTP request, then store it on a durable transport.

``parse_http(headers, body, topic)`` reads a binary-mode or structured-mode (JSON) CloudEvent 1.0
with the ``cloudevents`` SDK and rebuilds the chronik ``Message`` the sending
``CloudEventsTransport`` mapped (``chronik.transports.cloudevents``): id = CloudEvent id, topic =
the route's topic or else the CloudEvent ``type``, key = ``partitionkey`` or else ``subject``,
body = the data bytes, headers = the chronik headers plus ``ce-source``, ``ce-type``,
``ce-time``, ``ce-subject``, ``ce-dataschema`` and ``content-type`` (the ``datacontenttype``).
Bad input raises InvalidMessage naming the attribute (``field``): a missing ``id``, a ``type``
that is no valid topic, a ``subject`` that is no valid key, bad ``data_base64`` ...

``CloudEventsReceiver`` is what the ``chronik serve`` route (``chronik.server.http_cloudevents``)
calls: it accepts events of the topics its consumers subscribe to and publishes each on the
server's transport, returning only once the transport has it, so an HTTP 2xx means durable:
the transport must keep what it confirmed across a crash (PostgreSQL, NATS JetStream,
RabbitMQ); ``memory://`` is refused unless ``volatile=True`` (tests). The consumers then run
the normal loop on that transport (retries, failure policy, dead letters), with an inbox keyed
by message id, i.e. by CloudEvent id, so an event POSTed twice takes effect once.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from chronik.errors import ConfigurationError, InvalidMessage, TransportUnavailable
from chronik.transports.base import (
    CAUSATION_ID,
    CORRELATION_ID,
    DEFAULT_MAX_BODY_BYTES,
    Message,
    Transport,
    check_topic,
)
from chronik.transports.cloudevents import (
    CAUSATION_EXT,
    CONTEXT_ATTRIBUTES,
    CORRELATION_EXT,
    HEADERS_EXT,
    PARTITION_EXT,
    from_http,
)
from chronik.transports.message import check_message

try:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.exceptions import GenericException
except ImportError:  # pragma: no cover - cloudevents 1.x
    from cloudevents.exceptions import GenericException  # type: ignore[no-redef,import-not-found]

__all__ = ["REQUIRED", "CloudEventsReceiver", "parse_http"]

#: the attributes every CloudEvent carries
REQUIRED: Final = ("specversion", "id", "source", "type")
_STRUCTURED: Final = "application/cloudevents"
_KEY_MAX: Final = 256
_HEADER_NAME: Final = re.compile(r"[a-z][a-z0-9-]{0,63}")
_headers = msgspec.json.Decoder(dict[str, str])


def _invalid(what: str, field: str) -> InvalidMessage:
    return InvalidMessage(f"invalid CloudEvent: {what}", field=field)


def _structured_doc(body: bytes) -> dict[str, Any]:
    """The JSON object of a structured-mode event, its required attributes checked."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise _invalid("a structured-mode body must be a JSON object", "body") from None
    if not isinstance(doc, dict):
        raise _invalid("a structured-mode body must be a JSON object", "body")
    for name in REQUIRED:
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise _invalid(f"the {name} attribute is missing or not a string", name)
    if "data" in doc and "data_base64" in doc:
        raise _invalid("data and data_base64 together", "data")
    return doc


def _structured_body(doc: dict[str, Any]) -> bytes:
    if "data_base64" in doc:
        value = doc["data_base64"]
        try:
            if not isinstance(value, str):
                raise ValueError
            return base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            raise _invalid("data_base64 is not base64", "data_base64") from None
    data = doc.get("data")
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else msgspec.json.encode(data)


def parse_http(
    headers: Mapping[str, str],
    body: bytes,
    topic: str | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Message:
    """The Message a CloudEvents HTTP request carries; InvalidMessage (with ``field``) if the
    request is not a well-formed CloudEvent 1.0 that chronik can carry."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ctype = lowered.get("content-type", "").split(";")[0].strip().lower()
    structured = ctype.startswith(_STRUCTURED)
    doc: dict[str, Any] | None = None
    if ctype.startswith("application/cloudevents-batch"):
        raise _invalid("batched mode is not supported: one event per request", "content-type")
    if structured:
        if ctype != "application/cloudevents+json":
            raise _invalid(f"event format {ctype!r}: only JSON is supported", "content-type")
        doc = _structured_doc(body)
        data = _structured_body(doc)  # checked before the SDK reads it
        specversion = doc["specversion"]
    else:
        for name in REQUIRED:
            if not lowered.get(f"ce-{name}"):
                raise _invalid(f"the {name} attribute (header ce-{name}) is missing", name)
        specversion = lowered["ce-specversion"]
    if specversion != "1.0":
        raise _invalid(f"specversion {specversion!r}: only 1.0 is supported", "specversion")
    try:
        event = from_http(lowered, body, lambda data: data)
    except (GenericException, ValueError, TypeError, KeyError) as exc:
        raise InvalidMessage(f"invalid CloudEvent: {exc}") from None
    attributes: dict[str, Any] = dict(event.get_attributes())
    if topic is None:
        topic = check_topic(attributes["type"], "type")
    else:
        check_topic(topic)
    key = attributes.get(PARTITION_EXT) or attributes.get("subject")
    if key is not None and (
        not isinstance(key, str) or not 0 < len(key) <= _KEY_MAX or not key.isprintable()
    ):
        named = PARTITION_EXT if attributes.get(PARTITION_EXT) else "subject"
        raise _invalid(f"{named} must be 1-{_KEY_MAX} printable chars (the key)", named)
    if doc is None:
        data = body
    message = Message(
        topic=topic,
        body=data,
        id=str(attributes["id"]),
        headers=_message_headers(attributes),
        key=key,
    )
    try:
        return check_message(message, max_body_bytes)
    except InvalidMessage as exc:  # name the CloudEvent attribute, not the message field
        field = {"key": "subject", "headers": "extensions"}.get(exc.field or "") or exc.field
        raise InvalidMessage(f"invalid CloudEvent: {exc}", field=field) from None


def _message_headers(attributes: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name in ("source", "type", "time", "subject", "dataschema"):
        if attributes.get(name) is not None:
            headers[f"ce-{name}"] = str(attributes[name])
    if attributes.get("datacontenttype"):
        headers["content-type"] = str(attributes["datacontenttype"])
    for name, value in attributes.items():
        if name in CONTEXT_ATTRIBUTES or name == PARTITION_EXT or value is None:
            continue
        if name == CORRELATION_EXT:
            headers[CORRELATION_ID] = str(value)
        elif name == CAUSATION_EXT:
            headers[CAUSATION_ID] = str(value)
        elif name == HEADERS_EXT:
            try:
                headers.update(_headers.decode(str(value)))
            except msgspec.DecodeError:
                raise _invalid(f"{HEADERS_EXT} must be a JSON object of strings", name) from None
        elif _HEADER_NAME.fullmatch(name):
            headers[name] = str(value)
        else:
            raise _invalid(f"extension {name!r} is not a chronik header name", name)
    return headers


class CloudEventsReceiver:
    """Accepts CloudEvents of ``topics`` (None: any) into a durable transport.

    Until ``attach`` gave it its transport (once the server's consumers exist), ``accept``
    raises TransportUnavailable (503: the sender retries), so no event is accepted for a topic
    whose consumer groups do not exist yet.
    """

    def __init__(
        self,
        topics: Iterable[str] | None = None,
        *,
        volatile: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.topics = None if topics is None else frozenset(check_topic(t) for t in topics)
        self.volatile = volatile
        self.max_body_bytes = max_body_bytes
        self.transport: Transport | None = None
        self.accepted = 0

    def __repr__(self) -> str:
        where = "detached" if self.transport is None else repr(self.transport)
        return f"<CloudEventsReceiver {where} accepted={self.accepted}>"

    def attach(self, transport: Transport) -> None:
        """Store accepted events on ``transport`` from now on (ConfigurationError if it would
        lose them on a crash, or forward them instead of storing them)."""
        scheme = transport.scheme
        if scheme.startswith("cloudevents"):
            raise ConfigurationError("the CloudEvents receiver cannot store on a push transport")
        if scheme == "memory" and not self.volatile:
            raise ConfigurationError(
                "the CloudEvents receiver needs a durable transport (postgresql://, nats://, "
                "amqp://): memory:// would lose accepted events on a crash"
            )
        self.transport = transport

    async def accept(
        self, headers: Mapping[str, str], body: bytes, topic: str | None = None
    ) -> Message:
        """Parse, check and durably store one CloudEvent; the message it became."""
        message = parse_http(headers, body, topic, max_body_bytes=self.max_body_bytes)
        if self.topics is not None and message.topic not in self.topics:
            raise InvalidMessage(
                f"no consumer here subscribes to topic {message.topic!r}",
                field="type" if topic is None else "topic",
            )
        transport = self.transport
        if transport is None or transport.closed:
            raise TransportUnavailable("the CloudEvents receiver is not ready")
        await transport.publish(message)
        self.accepted += 1
        return message
