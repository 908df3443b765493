"""HTTP auth: the JWT matrix (HS256, RS256) and API keys, with 401 / 403 and logged failures."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chronik.server.auth import ApiKey, Auth
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth, JwtConfig
from chronik.server.http_server import HttpServer
from examples.shop.app import build_app

SECRET = "a-test-secret-of-32-characters!!"
CREATE = {
    "domain": "customer",
    "aggregate_id": "c1",
    "type": "CreateCustomer",
    "payload": {"name": "Ada", "email": "a@x"},
}


def rsa_pair() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


RS_KEY, RS_PUBLIC = rsa_pair()
OTHER_RS_KEY, _ = rsa_pair()


def token(scope: str = "read", *, key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"aud": "chronik", "exp": now + 60, "nbf": now - 5, "scope": scope, **claims}
    return jwt.encode(body, key, algorithm=alg)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    public = tmp_path / "rs.pem"
    public.write_bytes(RS_PUBLIC)
    auth = HttpAuth(
        Auth(
            [
                ApiKey(name="reader", key="reader-key-1"),
                ApiKey(name="blind", key="blind-key-1", read=False, commands={"customer": "*"}),
            ]
        ),
        JwtConfig(
            algorithms=["HS256", "RS256"],
            secret=SECRET,
            public_key_file=str(public),
            audience="chronik",
        ),
    )
    app = build_app("memory://")
    await app.open()
    server = HttpServer(create_http_app(app, auth=auth), port=0)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c
    await server.stop()
    await app.close()


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def unsigned(scope: str = "read") -> str:
    """A token with alg none (no signature)."""
    return jwt.encode(
        {"aud": "chronik", "exp": int(time.time()) + 60, "scope": scope}, None, algorithm="none"
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [  # made when the test runs: tokens minted at collection time would expire on the way
        (lambda: {}, "missing"),
        (lambda: bearer(token(exp=int(time.time()) - 10)), "expired"),
        (lambda: bearer(token(nbf=int(time.time()) + 3600)), "not yet valid"),
        (lambda: bearer(token(aud="someone-else")), "audience"),
        (lambda: bearer(unsigned()), "not allowed"),
        (lambda: bearer(token(key="another-secret-of-32-characters!")), "Signature"),
        (lambda: bearer(token(key=OTHER_RS_KEY, alg="RS256")), "Signature"),
        (lambda: bearer(token(alg="HS512", key=SECRET * 2)), "not allowed"),
        (lambda: {"x-api-key": "wrong-key-123"}, "unknown"),
    ],
)
async def test_bad_credentials_are_401_and_logged(
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    headers: Callable[[], dict[str, str]],
    why: str,
) -> None:
    """Missing, expired, early, wrong-audience, unsigned, forged or unknown credentials: 401."""
    with caplog.at_level(logging.WARNING, logger="chronik.http"):
        r = await http.get("/v1/events", headers=headers())
    assert r.status_code == 401, r.text
    assert r.json()["title"] == "AuthenticationError" and why.lower() in r.json()["detail"].lower()
    assert any("refused GET /v1/events" in m for m in caplog.messages)


async def test_a_command_without_credentials_is_401_before_its_body_is_read(
    http: httpx.AsyncClient,
) -> None:
    """POST /v1/commands with no or bad credentials answers 401 even when the body is bad:
    nothing about the command schema reaches an unauthenticated caller."""
    for headers in ({}, {"x-api-key": "wrong-key-123"}):
        for body in (b"{}", b"not json", b'{"domain": 1}'):
            r = await http.post("/v1/commands", content=body, headers=headers)
            assert r.status_code == 401, r.text
    r = await http.post("/v1/commands", content=b"{}", headers={"x-api-key": "blind-key-1"})
    assert r.status_code == 400  # authenticated: now the body is checked


async def test_scopes_and_keys_allow_what_they_name(http: httpx.AsyncClient) -> None:
    """Valid tokens and keys reach exactly what their scope or key allows (else 403)."""
    read_only = bearer(token("read"))
    assert (await http.get("/v1/events", headers=read_only)).status_code == 200
    assert (await http.post("/v1/commands", json=CREATE, headers=read_only)).status_code == 403
    assert (await http.post("/v1/projections/receipts/pause", headers=read_only)).status_code == 403
    rs = bearer(token("read commands:customer:CreateCustomer", key=RS_KEY, alg="RS256"))
    assert (await http.post("/v1/commands", json=CREATE, headers=rs)).status_code == 200
    points = {**CREATE, "type": "AddLoyaltyPoints", "payload": {"points": 1}}
    assert (await http.post("/v1/commands", json=points, headers=rs)).status_code == 403
    assert (await http.get("/v1/events", headers={"x-api-key": "reader-key-1"})).status_code == 200
    blind = {"x-api-key": "blind-key-1"}
    assert (await http.get("/v1/events", headers=blind)).status_code == 403
    assert (await http.post("/v1/commands", json=points, headers=blind)).status_code == 200
    assert (await http.get("/healthz")).status_code == 200  # liveness needs no credentials


def test_jwt_configuration_is_checked() -> None:
    """Unknown algorithms, short secrets and missing RS keys are configuration errors."""
    from chronik import ConfigurationError

    for config in (
        JwtConfig(algorithms=["none"], secret=SECRET),
        JwtConfig(algorithms=["HS256"], secret="short"),
        JwtConfig(algorithms=["RS256"]),
    ):
        with pytest.raises(ConfigurationError):
            HttpAuth(None, config)


async def test_an_authorization_hook_sees_every_command(tmp_path: Path) -> None:
    """An authorize(principal, command) hook can refuse what the allowlists would allow."""
    from chronik import Command, PermissionDenied
    from chronik.server.http_auth import Claims, Principal

    seen: list[tuple[str, str]] = []

    def only_own_customer(principal: Principal, command: Command) -> None:
        who = principal.name if isinstance(principal, ApiKey) else str(principal.claims["sub"])
        seen.append((who, command.aggregate_id))
        if isinstance(principal, Claims) and command.aggregate_id != principal.claims["sub"]:
            raise PermissionDenied(f"{who} may only act on itself")

    auth = HttpAuth(
        Auth([ApiKey(name="ops", key="ops-key-123", commands={"customer": "*"})]),
        JwtConfig(secret=SECRET, audience="chronik"),
        authorize=only_own_customer,
    )
    app = build_app("memory://")
    await app.open()
    server = HttpServer(create_http_app(app, auth=auth), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            mine = bearer(token("commands:customer:*", sub="c1"))
            assert (await http.post("/v1/commands", json=CREATE, headers=mine)).status_code == 200
            other = {**CREATE, "aggregate_id": "c2"}
            refused = await http.post("/v1/commands", json=other, headers=mine)
            assert refused.status_code == 403 and "only act on itself" in refused.json()["detail"]
            ops = {"x-api-key": "ops-key-123"}
            assert (await http.post("/v1/commands", json=other, headers=ops)).status_code == 200
    finally:
        await server.stop()
        await app.close()
    assert seen == [("c1", "c1"), ("c1", "c2"), ("ops", "c2")]


def test_pyjwt_is_loaded_only_when_bearer_jwts_are_configured() -> None:
    """A server with API keys only never imports PyJWT and cryptography (about 10 MB of memory);
    configuring JWTs imports them at start-up, not at the first token."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from chronik.server.auth import ApiKey, Auth\n"
        "from chronik.server.http_auth import HttpAuth, JwtConfig\n"
        "import chronik.cli.serve, chronik.server.grpc, chronik.server.http, chronik.server.admin\n"
        "HttpAuth(Auth([ApiKey(name='k', key='key-12345')]))\n"
        "assert 'jwt' not in sys.modules and 'cryptography' not in sys.modules, 'loaded early'\n"
        f"HttpAuth(None, JwtConfig(secret={SECRET!r}))\n"
        "assert 'jwt' in sys.modules, 'not loaded with JWTs configured'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
