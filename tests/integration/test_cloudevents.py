"""CloudEvents over HTTP between real chronik processes: `chronik outbox run` POSTs CloudEvents
(binary and structured mode) to a `chronik serve` whose receiver stores them on a PostgreSQL
transport before answering 2xx, and whose consumers handle them once each, retry, dead-letter,
and lose nothing to a SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import chronik
from chronik.errors import InvalidMessage
from chronik.outbox import OutboxAdmin, record
from chronik.testing.service_base import free_port
from chronik.transports import open_transport
from chronik.transports.cloudevents import to_http
from chronik.transports.message import Delivery, Message

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "orders.placed"

HANDLERS = """
import json, os

async def record(delivery, unit):
    line = {"id": delivery.id, "attempt": delivery.attempt, "topic": delivery.topic,
            "key": delivery.key, "headers": delivery.headers, "body": delivery.body.hex()}
    with open(os.environ["CE_LOG"], "a") as log:
        log.write(json.dumps(line) + "\\n")
    if delivery.body.startswith(b"fail"):
        raise RuntimeError("refused on purpose")
    if delivery.body.startswith(b"slow"):
        import asyncio
        await asyncio.sleep(0.1)  # the kill finds most of them unhandled
"""


class Receiver:
    """`chronik serve` with the CloudEvents receiver and one consumer, in ``workdir``."""

    def __init__(
        self, workdir: Path, transport: str, *, receiver: bool = True, extra: str = ""
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "handled.jsonl"
        (workdir / "ce_handlers.py").write_text(HANDLERS)
        consumers = (
            f"consumers:\n  subscriptions:\n"
            f"    - {{topic: {TOPIC}, group: billing, handler: ce_handlers:record,"
            f" retries: 2, backoff: 0.01, backoff_max: 0.05}}\n"
        )
        (workdir / "chronik.yaml").write_text(
            f"store: sqlite:///{workdir}/receiver.db\n"
            f"transport: {transport}\n"
            f"http: {{port: {self.port}}}\n"
            f"cloudevents: {{receiver: {str(receiver).lower()}}}\n" + consumers + extra
        )
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CHRONIK_STORE": ""}
        env["CE_LOG"] = str(self.log)
        cmd = [sys.executable, "-m", "chronik.cli", "serve", "--config", "chronik.yaml"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", "0", "--app-dir", str(self.workdir)],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out = ""
        while "consumers:" not in out:
            line = self.proc.stdout.readline()
            assert line, (out, self.proc.stderr.read())
            out += line

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def handled(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    async def wait_for(self, ids: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while not ids <= {h["id"] for h in self.handled()}:
                await asyncio.sleep(0.05)
        return self.handled()


@contextlib.contextmanager
def receiving(tmp_path: Path, postgres_url: str, **options: Any) -> Iterator[Receiver]:
    server = Receiver(tmp_path, f"{postgres_url}&lease=2", **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill()


@contextlib.asynccontextmanager
async def client(server: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http


def outbox_run(store: str, transport: str) -> subprocess.Popen[bytes]:
    args = ["outbox", "run", "--store", store, "--transport", transport, "--lease-ttl", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_outbox_process_delivers_cloudevents_to_serve(
    tmp_path: Path, postgres_url: str, mode: str
) -> None:
    """Messages recorded in one store's outbox reach the other server's consumer over HTTP as
    CloudEvents in each mode, with id, key, headers and body bytes intact."""
    sender = f"sqlite:///{tmp_path}/sender.db"
    sent: dict[str, Message] = {}
    async with chronik.open_store(sender) as store:
        for i in range(12):
            message = Message(
                topic=TOPIC,
                body=bytes([i, 0, 255]) + b'{"n": %d}' % i,
                id=f"order-{i}",
                key=f"customer-{i % 3}",
                headers={
                    "correlation-id": f"corr-{i}",
                    "causation-id": f"ev-{i}",
                    "x-tenant": "t1",
                },
            )
            async with store.transaction() as tx:
                tx.append(chronik.StreamId("order", f"o{i}"), [chronik.EventData("Placed", {})])
                record(tx, message)
            sent[message.id] = message
    (tmp_path / "receiver").mkdir()
    with receiving(tmp_path / "receiver", postgres_url) as server:
        target = f"cloudevents+http://127.0.0.1:{server.port}/v1/cloudevents?mode={mode}"
        proc = outbox_run(sender, target)
        try:
            handled = await server.wait_for(set(sent))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    by_id = {h["id"]: h for h in handled}
    assert len(handled) == len(sent)  # each handled once
    for message_id, message in sent.items():
        got = by_id[message_id]
        assert bytes.fromhex(got["body"]) == message.body
        assert got["key"] == message.key and got["topic"] == TOPIC
        assert {k: got["headers"][k] for k in message.headers} == message.headers
        assert got["headers"]["ce-type"] == TOPIC
        assert got["headers"]["ce-source"].startswith("chronik://")
    async with chronik.open_store(sender) as store:
        assert (await OutboxAdmin(store).status()).done == len(sent)


async def test_the_same_cloudevent_posted_twice_is_handled_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """With the transport's own dedup off, the consumer's inbox (keyed by CloudEvent id) makes
    a repeated POST a no-op; both POSTs are accepted."""
    server = Receiver(tmp_path, f"{postgres_url}&lease=2&dedup_window=0")
    server.start()
    try:
        async with client(server) as http:
            first = Message(topic=TOPIC, body=b"{}", id="ce-twice")
            for mode in ("binary", "structured"):  # the same event, in either mode
                headers, body = to_http(first, mode)  # type: ignore[arg-type]
                answer = await http.post("/v1/cloudevents", content=body, headers=headers)
                assert answer.status_code == 202, answer.text
                assert answer.json() == {"id": "ce-twice", "topic": TOPIC}
            headers, body = to_http(Message(topic=TOPIC, body=b"{}", id="ce-after"))
            assert (
                await http.post(f"/v1/cloudevents/{TOPIC}", content=body, headers=headers)
            ).is_success
            handled = await server.wait_for({"ce-twice", "ce-after"})
            await asyncio.sleep(0.3)  # time for a wrongful second handling to show
    finally:
        server.stop()
    assert [h["id"] for h in server.handled()] == ["ce-twice", "ce-after"], handled


async def test_a_failing_event_is_retried_then_dead_lettered(
    tmp_path: Path, postgres_url: str
) -> None:
    """The consumer's failure policy applies to received CloudEvents: 1 + 2 retries, then the
    event lands on the group's dead-letter queue with the reason."""
    with receiving(tmp_path, postgres_url) as server:
        async with client(server) as http:
            headers, body = to_http(Message(topic=TOPIC, body=b"fail me", id="ce-poison"))
            assert (
                await http.post("/v1/cloudevents", content=body, headers=headers)
            ).status_code == 202
        dead: asyncio.Queue[Delivery] = asyncio.Queue()

        async def on_dead(delivery: Delivery) -> None:
            await dead.put(delivery)

        async with open_transport(postgres_url) as transport:
            await transport.listen(f"{TOPIC}.billing.dead", on_dead)
            letter = await asyncio.wait_for(dead.get(), 30)
        assert letter.id == "ce-poison" and letter.body == b"fail me"
        assert "refused on purpose" in letter.headers["dead-reason"]
        assert letter.headers["dead-attempts"] == "3"
        assert [h["attempt"] for h in server.handled()] == [1, 2, 3]


async def test_bad_cloudevents_are_refused_naming_the_attribute(
    tmp_path: Path, postgres_url: str
) -> None:
    """Bad events get 400 problem+json naming the CloudEvent attribute; an oversized body 413;
    nothing reaches the consumer."""
    good_headers, good_body = to_http(Message(topic=TOPIC, body=b"{}", id="ok-1"))
    cases: list[tuple[dict[str, str], bytes, str]] = [
        ({k: v for k, v in good_headers.items() if k != "ce-id"}, good_body, "id"),
        ({k: v for k, v in good_headers.items() if k != "ce-source"}, good_body, "source"),
        ({**good_headers, "ce-type": "Not A Topic"}, good_body, "type"),
        ({**good_headers, "ce-type": "other.topic"}, good_body, "type"),
        ({**good_headers, "ce-specversion": "0.3"}, good_body, "specversion"),
        ({**good_headers, "ce-id": "bad id with spaces"}, good_body, "id"),
        ({**good_headers, "ce-subject": "x" * 300}, good_body, "subject"),
        ({"content-type": "application/cloudevents+json"}, b"[1, 2]", "body"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "a", "source": "s", "type": "orders.placed",'
            b' "data_base64": "!!not base64!!"}',
            "data_base64",
        ),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "content-type"),
    ]
    with receiving(tmp_path, postgres_url) as server:
        async with client(server) as http:
            for headers, body, field in cases:
                answer = await http.post("/v1/cloudevents", content=body, headers=headers)
                assert answer.status_code == 400, (field, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json().get("field") == field, (field, answer.json())
            big = b"x" * (1024 * 1024 + 1)
            answer = await http.post("/v1/cloudevents", content=big, headers=good_headers)
            assert answer.status_code == 413
            answer = await http.post(
                "/v1/cloudevents/Bad!", content=good_body, headers=good_headers
            )
            assert answer.status_code in (400, 404)
            assert (
                await http.post("/v1/cloudevents", content=good_body, headers=good_headers)
            ).status_code == 202
            await server.wait_for({"ok-1"})
        target = f"cloudevents+http://127.0.0.1:{server.port}/v1/cloudevents?mode=structured"
        async with open_transport(target) as transport:  # the sender's view: final, typed
            with pytest.raises(InvalidMessage) as caught:
                await transport.publish(Message(topic="other.topic", body=b"{}", id="no-1"))
            assert caught.value.field == "type" and "400" in str(caught.value)
        assert [h["id"] for h in server.handled()] == ["ok-1"]


async def test_the_receiver_is_off_unless_enabled(tmp_path: Path, postgres_url: str) -> None:
    """Without cloudevents.receiver the paths do not exist (404), the consumers still run."""
    headers, body = to_http(Message(topic=TOPIC, body=b"{}", id="ce-off"))
    with receiving(tmp_path, postgres_url, receiver=False) as server:
        async with client(server) as http:
            for path in ("/v1/cloudevents", f"/v1/cloudevents/{TOPIC}"):
                answer = await http.post(path, content=body, headers=headers)
                assert answer.status_code == 404, answer.text
    assert server.handled() == []


async def test_kill_9_after_2xx_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    """Every event answered 2xx is handled even though the receiver was SIGKILLed with most of
    them unhandled: 2xx meant stored on the transport, not in memory."""
    ids = [f"ce-kill-{i}" for i in range(15)]
    server = Receiver(tmp_path, f"{postgres_url}&lease=1")
    server.start()
    try:
        async with client(server) as http:
            for message_id in ids:
                headers, body = to_http(Message(topic=TOPIC, body=b"slow", id=message_id))
                answer = await http.post("/v1/cloudevents", content=body, headers=headers)
                assert answer.status_code == 202
        server.kill()
        before = {h["id"] for h in server.handled()}
        assert len(before) < len(ids)  # the kill hit unhandled, accepted events
        server.start()
        handled = await server.wait_for(set(ids), timeout=60)
    finally:
        server.stop()
        server.kill()
    assert {h["id"] for h in handled} == set(ids)


AUTH = """auth:
  api_keys:
    - {name: broker, key: ce-broker-key-1, append: true}
    - {name: reader, key: ce-reader-key-1}
"""


async def test_with_auth_the_receiver_needs_the_append_right(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With API keys configured: no key 401, a key without append 403, the sender's
    api_key_env key 202."""
    headers, body = to_http(Message(topic=TOPIC, body=b"{}", id="ce-auth"))
    with receiving(tmp_path, postgres_url, extra=AUTH) as server:
        async with client(server) as http:
            answer = await http.post("/v1/cloudevents", content=body, headers=headers)
            assert answer.status_code == 401
            reader = {**headers, "x-api-key": "ce-reader-key-1"}
            answer = await http.post("/v1/cloudevents", content=body, headers=reader)
            assert answer.status_code == 403
        monkeypatch.setenv("CE_TEST_KEY", "ce-broker-key-1")
        target = (
            f"cloudevents+http://127.0.0.1:{server.port}/v1/cloudevents?api_key_env=CE_TEST_KEY"
        )
        async with open_transport(target) as transport:
            await transport.publish(Message(topic=TOPIC, body=b"{}", id="ce-auth"))
        await server.wait_for({"ce-auth"})
