"""TLS for gRPC and HTTP with certificates the tests generate: served, plain clients refused,
client certificates required, the gRPC certificate rotated without a restart, bad config typed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

import chronik
from chronik.errors import ConfigurationError, ServiceUnavailable
from chronik.sdk import Client, ClientTLS
from chronik.server.config import load_config
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_server import HttpServer
from chronik.server.tls import TlsConfig
from chronik.testing.certificates import Issued, TestCA
from chronik.testing.services import free_port
from examples.shop.app import build_app

ROOT = Path(__file__).resolve().parents[2]


def customer(aggregate_id: str) -> chronik.Command:
    """A CreateCustomer command of the shop."""
    return chronik.Command(
        domain="customer",
        aggregate_id=aggregate_id,
        type="CreateCustomer",
        payload={"name": "Ada", "email": "ada@x"},
    )


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """A CA of this test's own."""
    return TestCA(tmp_path / "ca")


@pytest.fixture
def server_cert(ca: TestCA) -> Issued:
    """A server certificate for 127.0.0.1 and localhost."""
    return ca.issue("server")


@pytest.fixture
def client_cert(ca: TestCA) -> Issued:
    """A client certificate of the same CA."""
    return ca.issue("client", client=True, hosts=())


async def grpc_server(tls: TlsConfig) -> GrpcServer:
    """A started gRPC server of the shop over TLS."""
    server = GrpcServer(build_app("memory://"), port=0, tls=tls)
    await server.start()
    return server


@pytest.fixture
async def tls_server(server_cert: Issued) -> AsyncIterator[GrpcServer]:
    """gRPC over TLS, no client certificates."""
    server = await grpc_server(TlsConfig(str(server_cert.cert), str(server_cert.key)))
    yield server
    await server.stop(1)


@pytest.fixture
async def mtls_server(ca: TestCA, server_cert: Issued) -> AsyncIterator[GrpcServer]:
    """gRPC over TLS requiring a client certificate of the CA."""
    tls = TlsConfig(str(server_cert.cert), str(server_cert.key), str(ca.cert), True)
    server = await grpc_server(tls)
    yield server
    await server.stop(1)


def client(port: int, tls: ClientTLS | None) -> Client:
    """A client that gives up quickly (no retries)."""
    return Client(f"127.0.0.1:{port}", tls=tls, timeout=3, retries=0)


def served_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate a TLS server on ``port`` presents now."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --- gRPC ---------------------------------------------------------------------------------------


async def test_grpc_over_tls_serves_a_client_trusting_the_ca(
    tls_server: GrpcServer, ca: TestCA
) -> None:
    """A client with the CA dispatches over TLS; the server shows the certificate it presents."""
    async with client(tls_server.port, ClientTLS(ca=str(ca.cert))) as c:
        result = await c.dispatch(customer("c1"))
        assert [e.type for e in result.events] == ["CustomerCreated"]
        assert "TLS" in repr(c)
    assert tls_server.tls_files is not None
    assert served_serial(tls_server.port, ca.cert) > 0


async def test_grpc_over_tls_refuses_plain_and_untrusting_clients(
    tls_server: GrpcServer, tmp_path: Path
) -> None:
    """A plaintext client, and a TLS client that trusts another CA, get no answer."""
    async with client(tls_server.port, None) as plain:
        with pytest.raises(ServiceUnavailable):
            await plain.dispatch(customer("c1"))
    other = TestCA(tmp_path / "other")
    async with client(tls_server.port, ClientTLS(ca=str(other.cert))) as stranger:
        with pytest.raises(ServiceUnavailable):
            await stranger.dispatch(customer("c2"))


async def test_grpc_mutual_tls_requires_a_client_certificate_of_the_ca(
    mtls_server: GrpcServer, ca: TestCA, client_cert: Issued, tmp_path: Path
) -> None:
    """Without a client certificate, or with one of another CA, the call fails; with one of
    the configured CA it succeeds."""
    async with client(mtls_server.port, ClientTLS(ca=str(ca.cert))) as anonymous:
        with pytest.raises(ServiceUnavailable):
            await anonymous.dispatch(customer("c1"))
    other = TestCA(tmp_path / "other").issue("intruder", client=True, hosts=())
    forged = ClientTLS(ca=str(ca.cert), cert=str(other.cert), key=str(other.key))
    async with client(mtls_server.port, forged) as intruder:
        with pytest.raises(ServiceUnavailable):
            await intruder.dispatch(customer("c2"))
    good = ClientTLS(ca=str(ca.cert), cert=str(client_cert.cert), key=str(client_cert.key))
    async with client(mtls_server.port, good) as member:
        result = await member.dispatch(customer("c3"))
        assert result.version == 0


async def test_grpc_certificate_rotates_without_a_restart(
    tls_server: GrpcServer, ca: TestCA, server_cert: Issued
) -> None:
    """New certificate files written over the old ones are served to new connections, while
    a client connected before keeps working; a half-written pair keeps the old one."""
    first = await asyncio.to_thread(served_serial, tls_server.port, ca.cert)
    assert first == server_cert.serial
    trusting = ClientTLS(ca=str(ca.cert))
    async with client(tls_server.port, trusting) as before:
        await before.dispatch(customer("c1"))
        # a key that does not match the certificate yet (mid-rotation): the old pair stays
        ca.issue("next", cert=ca.directory / "unused.pem", key=server_cert.key)
        assert await asyncio.to_thread(served_serial, tls_server.port, ca.cert) == first
        rotated = ca.issue("server")  # now the certificate too: a consistent pair
        assert rotated.serial != first
        assert await asyncio.to_thread(served_serial, tls_server.port, ca.cert) == rotated.serial
        assert tls_server.tls_files is not None and tls_server.tls_files.reloads == 1
        await before.dispatch(customer("c2"))  # the old connection still serves
    async with client(tls_server.port, trusting) as after:
        assert (await after.dispatch(customer("c3"))).version == 0


# --- HTTP ---------------------------------------------------------------------------------------


def http_context(ca: TestCA, cert: Issued | None = None) -> ssl.SSLContext:
    """An httpx client's TLS context: trusting ``ca``, presenting ``cert`` if given."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


async def http_server(tls: TlsConfig) -> HttpServer:
    """A started HTTPS server of the shop."""
    app = build_app("memory://")
    await app.open()
    server = HttpServer(create_http_app(app), "127.0.0.1", 0, tls=tls)
    await server.start()
    return server


async def test_https_serves_and_refuses_plain_http(ca: TestCA, server_cert: Issued) -> None:
    """Commands over HTTPS with the CA trusted; plain HTTP to the port gets no answer."""
    server = await http_server(TlsConfig(str(server_cert.cert), str(server_cert.key)))
    try:
        assert server.scheme == "https"
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=http_context(ca)) as http:
            body = {"domain": "customer", "aggregate_id": "c1", "type": "CreateCustomer"}
            body["payload"] = {"name": "Ada", "email": "ada@x"}  # type: ignore[assignment]
            answer = await http.post("/v1/commands", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["events"][0]["type"] == "CustomerCreated"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get("/healthz")
    finally:
        await server.stop()


async def test_https_client_certificate_required(
    ca: TestCA, server_cert: Issued, client_cert: Issued
) -> None:
    """With require_client_cert, a client without a certificate is refused, one with a
    certificate of the CA is served."""
    tls = TlsConfig(str(server_cert.cert), str(server_cert.key), str(ca.cert), True)
    server = await http_server(tls)
    try:
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=http_context(ca)) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.get("/healthz")
        context = http_context(ca, client_cert)
        async with httpx.AsyncClient(base_url=base, verify=context) as member:
            assert (await member.get("/healthz")).status_code == 200
    finally:
        await server.stop()


async def test_https_reload_serves_the_new_certificate(ca: TestCA, server_cert: Issued) -> None:
    """reload_tls (SIGHUP in chronik serve) makes new HTTPS connections get the new certificate."""
    server = await http_server(TlsConfig(str(server_cert.cert), str(server_cert.key)))
    try:
        assert await asyncio.to_thread(served_serial, server.port, ca.cert) == server_cert.serial
        rotated = ca.issue("server")
        server.reload_tls()
        assert await asyncio.to_thread(served_serial, server.port, ca.cert) == rotated.serial
    finally:
        await server.stop()


# --- configuration ------------------------------------------------------------------------------


def test_half_configured_tls_is_refused_naming_the_field(
    ca: TestCA, server_cert: Issued, tmp_path: Path
) -> None:
    """A cert without a key, a required client cert without a CA, a missing file, a key of
    another certificate: each a ConfigurationError naming the field."""
    cert, key = str(server_cert.cert), str(server_cert.key)
    other = ca.issue("other")
    cases = {
        "grpc.tls.key": TlsConfig(cert=cert),
        "grpc.tls.cert": TlsConfig(key=key),
        "grpc.tls.client_ca": TlsConfig(cert, key, require_client_cert=True),
    }
    for field, tls in cases.items():
        with pytest.raises(ConfigurationError, match=re.escape(field)):
            tls.check("grpc.tls")
    with pytest.raises(ConfigurationError, match=r"http\.tls\.cert: cannot read"):
        TlsConfig(str(tmp_path / "missing.pem"), key).check("http.tls")
    with pytest.raises(ConfigurationError, match=r"http\.tls\.key: .* do not load"):
        TlsConfig(cert, str(other.key)).check("http.tls")
    with pytest.raises(ConfigurationError, match=r"http\.tls\.client_ca: .* is not a PEM"):
        TlsConfig(cert, key, client_ca=key).check("http.tls")
    with pytest.raises(ConfigurationError, match=r"grpc\.tls\.key"):
        GrpcServer(build_app("memory://"), tls=TlsConfig(cert=cert))
    with pytest.raises(ConfigurationError, match="ClientTLS key"):
        ClientTLS(ca=str(ca.cert), cert=cert).credentials()
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpc: {tls: {cert: a.pem, keyfile: b.key}}\n")
    with pytest.raises(ConfigurationError, match="keyfile"):
        load_config(bad)


def _serve(config: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONIK_STORE": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", "--config", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_chronik_serve_over_tls_prints_grpcs_and_https(
    tmp_path: Path, ca: TestCA, server_cert: Issued, client_cert: Issued
) -> None:
    """`chronik serve` with TLS on both servers prints grpcs:// and https://, serves a client
    with a certificate on both, and a half-configured section stops it with the field named."""
    grpc_port, http_port = free_port(), free_port()
    tls = f"{{cert: {server_cert.cert}, key: {server_cert.key}}}"
    mtls = (
        f"{{cert: {server_cert.cert}, key: {server_cert.key}, client_ca: {ca.cert}, "
        "require_client_cert: true}"
    )
    config = tmp_path / "chronik.yaml"
    config.write_text(
        "store: memory://\napp: examples.shop.app:build_app\n"
        f"grpc: {{port: {grpc_port}, tls: {mtls}}}\nhttp: {{port: {http_port}, tls: {tls}}}\n"
    )
    proc = _serve(config, tmp_path)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = ""
        while "HTTP:" not in out:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, (out, proc.stderr.read())
            out += line
        assert f"grpcs://127.0.0.1:{grpc_port}" in out, out
        assert f"https://127.0.0.1:{http_port}/v1" in out, out
        good = ClientTLS(ca=str(ca.cert), cert=str(client_cert.cert), key=str(client_cert.key))
        async with client(grpc_port, good) as c:
            assert (await c.dispatch(customer("c1"))).version == 0
        base = f"https://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, verify=http_context(ca)) as http:
            assert (await http.get("/healthz")).status_code == 200
        proc.send_signal(signal.SIGHUP)  # reloads the HTTP certificate, keeps serving
        rest = ""
        while "TLS reloaded" not in rest:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, rest
            rest += line
        async with httpx.AsyncClient(base_url=base, verify=http_context(ca)) as http:
            assert (await http.get("/healthz")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, None, 30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    config.write_text(
        f"store: memory://\ngrpc: {{port: 0, tls: {{cert: {server_cert.cert}}}}}\n"
        "http: {enabled: false}\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chronik.cli", "serve", "--config", str(config)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CHRONIK_STORE": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "grpc.tls.key" in done.stderr, done.stderr


async def test_cluster_nodes_call_each_other_with_their_own_tls_config(ca: TestCA) -> None:
    """Two nodes with node certificates of one CA, each requiring client certificates: node A
    calls node B with its own server config as its client identity (``as_client``), while a
    server-only certificate is refused as a client identity."""
    configs = []
    for name in ("node-a", "node-b"):
        issued = ca.issue(name, node=True)
        configs.append(TlsConfig(str(issued.cert), str(issued.key), str(ca.cert), True))
    node_a, node_b = configs
    server_b = await grpc_server(node_b)
    try:
        async with client(server_b.port, node_a.as_client()) as a_to_b:
            assert (await a_to_b.dispatch(customer("forwarded"))).version == 0
        server_only = ca.issue("web-only")
        identity = TlsConfig(str(server_only.cert), str(server_only.key), str(ca.cert))
        async with client(server_b.port, identity.as_client()) as refused:
            with pytest.raises(ServiceUnavailable):
                await refused.dispatch(customer("refused"))
    finally:
        await server_b.stop(1)
    with pytest.raises(ConfigurationError, match=r"grpc\.tls\.client_ca"):
        TlsConfig(node_a.cert, node_a.key).as_client()
