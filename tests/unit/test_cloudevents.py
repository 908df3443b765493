"""The CloudEvents mapping, receiver checks, transport options and Knative manifests, without
a server (tests/integration/test_cloudevents.py runs them between real processes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from chronik.cli import _build
from chronik.errors import (
    ConfigurationError,
    InvalidMessage,
    PayloadTooLarge,
    TransportUnavailable,
)
from chronik.testing.service_base import free_port
from chronik.transports import Delivery, open_transport
from chronik.transports.cloudevents import CloudEventsTransport, to_http
from chronik.transports.cloudevents_receiver import CloudEventsReceiver, parse_http
from chronik.transports.message import Message

MESSAGE = Message(
    topic="orders.placed",
    body=b"\x00\xff binary {}",
    id="order-1",
    key="customer 7",
    headers={
        "correlation-id": "corr-1",
        "causation-id": "cause-1",
        "tenant": "acme",
        "x-trace": "t-1",
        "id": "not the id",
        "content-type": "application/octet-stream",
    },
)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_message_survives_the_round_trip_in_each_mode(mode: str) -> None:
    """to_http then parse_http gives back the message: id, topic, key, headers, body bytes."""
    headers, body = to_http(MESSAGE, mode, source="chronik://test")  # type: ignore[arg-type]
    got = parse_http(headers, body)
    assert (got.id, got.topic, got.key, got.body) == (
        MESSAGE.id,
        MESSAGE.topic,
        MESSAGE.key,
        MESSAGE.body,
    )
    assert {k: got.headers[k] for k in MESSAGE.headers} == MESSAGE.headers
    assert got.headers["ce-source"] == "chronik://test"


def test_binary_mode_uses_the_cloudevents_attributes_knative_filters_on() -> None:
    """Binary mode: ce-id/type/subject, the partitionkey and correlation extensions as headers,
    the body as is; other headers packed into chronikheaders unless a valid extension name."""
    headers, body = to_http(MESSAGE, "binary", source="chronik://test")
    assert body == MESSAGE.body
    assert headers["ce-id"] == "order-1" and headers["ce-type"] == "orders.placed"
    assert headers["ce-subject"] == headers["ce-partitionkey"] == "customer 7"
    assert headers["ce-correlationid"] == "corr-1" and headers["ce-causationid"] == "cause-1"
    assert headers["ce-tenant"] == "acme"
    assert json.loads(headers["ce-chronikheaders"]) == {"x-trace": "t-1", "id": "not the id"}
    assert headers["content-type"] == "application/octet-stream"


def test_a_foreign_structured_event_becomes_a_message() -> None:
    """A structured event from another producer: JSON data as JSON bytes, text data as UTF-8,
    the subject as key, the route's topic over the type."""
    doc = {
        "specversion": "1.0",
        "id": "ext-1",
        "source": "/shop",
        "type": "com.example.order",
        "subject": "o-9",
        "datacontenttype": "application/json",
        "data": {"total": 12},
    }
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    got = parse_http(headers, json.dumps(doc).encode())
    assert (got.topic, got.key, json.loads(got.body)) == ("com.example.order", "o-9", {"total": 12})
    assert got.headers["content-type"] == "application/json"
    doc |= {"datacontenttype": "text/plain", "data": "héllo"}
    got = parse_http(headers, json.dumps(doc).encode(), "orders.placed")
    assert (got.topic, got.body) == ("orders.placed", "héllo".encode())


def test_bad_requests_name_the_attribute() -> None:
    """Each refusal is an InvalidMessage naming the CloudEvent attribute at fault."""
    headers, body = to_http(MESSAGE)
    no_type = {k: v for k, v in headers.items() if k != "ce-type"}
    cases = [
        (no_type, body, None, "type"),
        ({**headers, "ce-partitionkey": "x" * 257}, body, None, "partitionkey"),
        ({**headers, "ce-chronikheaders": "[1]"}, body, None, "chronikheaders"),
        ({**headers, "ce-9lives": "v"}, body, None, "9lives"),
        (headers, body, "Bad Topic", "topic"),
        ({"content-type": "application/cloudevents+xml"}, b"<e/>", None, "content-type"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", None, "body"),
    ]
    for h, b, topic, field in cases:
        with pytest.raises(InvalidMessage) as caught:
            parse_http(h, b, topic)
        if field is not None:
            assert caught.value.field == field, (field, caught.value)
    with pytest.raises(PayloadTooLarge):
        parse_http(headers, body, max_body_bytes=4)


def test_transport_url_options_and_push_only() -> None:
    """Query options configure the transport and leave the target URL; it cannot consume."""
    url = "cloudevents+https://broker.example:8443/ns/default?mode=structured&retries=1&keep=1"
    transport = open_transport(url)
    assert isinstance(transport, CloudEventsTransport)
    assert transport.target == "https://broker.example:8443/ns/default?keep=1"
    assert (transport.mode, transport.retries) == ("structured", 1)
    assert transport.source.startswith("chronik://")
    for bad in (
        "cloudevents+http://h/p?mode=batch",
        "cloudevents+http:///p",
        "cloudevents+http://h?timeout=x",
    ):
        with pytest.raises(ConfigurationError):
            open_transport(bad)

    async def consume() -> None:
        async def handle(delivery: Delivery) -> None:
            pass

        async with open_transport("cloudevents+http://127.0.0.1:9/") as t:
            with pytest.raises(ConfigurationError):
                await t.subscribe("orders.placed", "g", handle)

    asyncio.run(consume())


async def test_an_unreachable_endpoint_is_transport_unavailable() -> None:
    """Connection refused on every attempt ends in TransportUnavailable (outcome unknown)."""
    url = f"cloudevents+http://127.0.0.1:{free_port()}/?retries=2&backoff=0.01"
    async with open_transport(url) as transport:
        with pytest.raises(TransportUnavailable) as caught:
            await transport.publish(MESSAGE)
    assert caught.value.outcome_unknown and "3 attempts" in str(caught.value)


async def test_the_receiver_stores_only_durably_and_only_subscribed_topics() -> None:
    """memory:// and push transports are refused (unless volatile), nothing is accepted before
    attach, and a topic no consumer subscribes to is refused naming the type."""
    receiver = CloudEventsReceiver({"orders.placed"})
    headers, body = to_http(MESSAGE)
    with pytest.raises(TransportUnavailable):
        await receiver.accept(headers, body)
    with pytest.raises(ConfigurationError):
        receiver.attach(open_transport("memory://"))
    with pytest.raises(ConfigurationError):
        receiver.attach(open_transport("cloudevents+http://127.0.0.1:9/"))
    volatile = CloudEventsReceiver({"orders.placed"}, volatile=True)
    async with open_transport("memory://") as transport:
        got: list[Delivery] = []

        async def handle(delivery: Delivery) -> None:
            got.append(delivery)

        await transport.subscribe("orders.placed", "g", handle)
        volatile.attach(transport)
        other, other_body = to_http(Message(topic="other.topic", body=b"", id="o-1"))
        with pytest.raises(InvalidMessage) as caught:
            await volatile.accept(other, other_body)
        assert caught.value.field == "type"
        assert (await volatile.accept(headers, body)).id == MESSAGE.id
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
    assert got[0].message.body == MESSAGE.body and volatile.accepted == 1


CONFIG = """
transport: postgresql://u@localhost/db
consumers:
  subscriptions:
    - {topic: orders.placed, group: billing, handler: app:billing}
    - {topic: orders.placed, group: shipping, handler: app:shipping}
    - {topic: customer_registered.v2, group: crm, handler: app:crm}
cloudevents:
  receiver: true
  knative: {namespace: shop, service: orders-api, dead_letter_uri: "http://dlq.shop.svc"}
"""


def test_knative_manifests_are_a_broker_and_a_trigger_per_topic(tmp_path: Path) -> None:
    """`chronik knative manifests` prints a Broker and one Trigger per topic, each with the
    eventing.knative.dev/v1 fields Knative requires, pointing at the receiver route."""
    (tmp_path / "chronik.yaml").write_text(CONFIG)
    result = CliRunner().invoke(
        _build(), ["knative", "manifests", "-c", str(tmp_path / "chronik.yaml")]
    )
    assert result.exit_code == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Broker", "Trigger", "Trigger"]
    assert {d["apiVersion"] for d in docs} == {"eventing.knative.dev/v1"}
    assert all(d["metadata"]["namespace"] == "shop" for d in docs)
    by_type = {d["spec"]["filter"]["attributes"]["type"]: d for d in docs[1:]}
    assert set(by_type) == {"orders.placed", "customer_registered.v2"}
    for topic, trigger in by_type.items():
        name = trigger["metadata"]["name"]
        assert len(name) <= 63 and name.replace("-", "").isalnum() and name.islower()
        spec = trigger["spec"]
        assert spec["broker"] == docs[0]["metadata"]["name"]
        assert spec["subscriber"]["ref"] == {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "orders-api",
            "namespace": "shop",
        }
        assert spec["subscriber"]["uri"] == f"/v1/cloudevents/{topic}"
        assert spec["delivery"]["deadLetterSink"] == {"uri": "http://dlq.shop.svc"}
    assert by_type["orders.placed"]["metadata"]["annotations"]["chronik.dev/groups"] == (
        "billing,shipping"
    )
    (tmp_path / "empty.yaml").write_text("store: memory://\n")
    result = CliRunner().invoke(
        _build(), ["knative", "manifests", "-c", str(tmp_path / "empty.yaml")]
    )
    assert result.exit_code == 1 and "consumers.subscriptions" in result.stderr
