"""Tenant scopes of credentials (chronik.server.tenancy): API keys, JWT claims, the config block,
and the scoped reads over a real in-memory store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

import chronik
from chronik.errors import AuthenticationError, ConfigurationError, NotFound, PermissionDenied
from chronik.messages import ANY, EventData, StreamId
from chronik.server import tenancy
from chronik.server.auth import ApiKey, Auth
from chronik.server.config import load_config
from chronik.server.http_auth import HttpAuth, JwtConfig
from chronik.server.problems import problem_fields
from chronik.server.tenancy import ALL, NOBODY, Scope, TenancyConfig

SECRET = "a-test-secret-of-32-characters!!"
REQUIRED = TenancyConfig("required")


def keys(*tenants: str | None) -> list[ApiKey]:
    return [ApiKey(f"k{i}", f"key-number-{i}", tenant=t) for i, t in enumerate(tenants)]


def test_scope_of_a_credential() -> None:
    """A tenant scopes to it, "*" to everything, none to everything (off) or nothing
    (required)."""
    assert Scope.of("acme", REQUIRED) == Scope("acme") == Scope.of("acme", TenancyConfig())
    assert Scope.of("*", REQUIRED) is ALL and ALL.operator
    assert Scope.of(None, TenancyConfig()) is ALL
    assert Scope.of(None, REQUIRED) is NOBODY and not NOBODY.operator and NOBODY.denied
    assert Scope("acme").sees("acme") and not Scope("acme").sees("globex")
    assert not Scope("acme").sees("") and not NOBODY.sees("") and ALL.sees("x")


def test_writes_go_to_the_scopes_tenant_or_are_refused_naming_tenant() -> None:
    """No tenant: the scope's; the same: fine; another, or a scope without tenant: 403 whose
    problem names ``tenant``; an operator writes where it says."""
    acme = Scope("acme")
    assert acme.write_tenant("") == "acme" == acme.write_tenant("acme")
    assert ALL.write_tenant("globex") == "globex" and ALL.write_tenant("") == ""
    for scope, given in ((acme, "globex"), (NOBODY, ""), (NOBODY, "acme")):
        with pytest.raises(PermissionDenied, match="tenant") as refused:
            scope.write_tenant(given)
        assert problem_fields(refused.value) == {"field": "tenant"}
    with pytest.raises(PermissionDenied, match="operator"):
        acme.require_operator("projections")
    ALL.require_operator("projections")


def test_stream_reads_of_another_tenant_are_not_found() -> None:
    """A stream of another tenant is NotFound (its existence is not revealed), as is any
    stream to a scope without tenant; no tenant means the scope's own."""
    acme = Scope("acme")
    assert acme.read_stream(StreamId("c", "1")) == StreamId("c", "1", "acme")
    assert acme.read_stream(StreamId("c", "1", "acme")) == StreamId("c", "1", "acme")
    assert ALL.read_stream(StreamId("c", "1", "x")) == StreamId("c", "1", "x")
    for scope, tenant in ((acme, "globex"), (NOBODY, ""), (NOBODY, "acme")):
        with pytest.raises(NotFound):
            scope.read_stream(StreamId("c", "1", tenant))


def test_api_key_tenants_are_validated() -> None:
    """A key's tenant is a tenant name or "*"; anything else fails the configuration."""
    auth = Auth(keys("acme", "*", None), REQUIRED)
    assert [auth.scope(k) for k in keys("acme", "*", None)] == [Scope("acme"), ALL, NOBODY]
    assert auth.scope(None) is NOBODY
    for bad in ("ACME", "", "-x", "a" * 65):
        with pytest.raises(ConfigurationError, match="invalid tenant"):
            Auth(keys(bad))
    config = [{"name": "web", "key": "web-key-123", "tenant": "acme"}]
    found = Auth.from_config(config, REQUIRED)
    assert found is not None and found.tenancy == REQUIRED
    assert found.scope(found.authenticate([("x-api-key", "web-key-123")])) == Scope("acme")


def _token(**claims: Any) -> str:
    body = {"exp": int(time.time()) + 60, "scope": "read", **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def test_jwt_tenant_claim_default_custom_and_malformed() -> None:
    """The ``tenant`` claim (or ``JwtConfig.tenant_claim``) scopes a token; a token without
    it reaches nothing under required; a malformed claim makes the token invalid."""
    auth = HttpAuth(None, JwtConfig(secret=SECRET), tenancy=REQUIRED)
    who = auth.authenticate({"authorization": f"Bearer {_token(tenant='acme')}"})
    assert auth.scope(who) == Scope("acme")
    who = auth.authenticate({"authorization": f"Bearer {_token(org='acme')}"})
    assert auth.scope(who) is NOBODY
    custom = HttpAuth(None, JwtConfig(secret=SECRET, tenant_claim="org"), tenancy=REQUIRED)
    org = {"authorization": f"Bearer {_token(org='acme')}"}
    assert custom.scope(custom.check(org, "read")) == Scope("acme")
    assert custom.scope(custom.authenticate({"authorization": f"Bearer {_token(org='*')}"})) is ALL
    for bad in ("Acme", 5, ["acme"], ""):
        with pytest.raises(AuthenticationError, match="invalid tenant"):
            auth.authenticate({"authorization": f"Bearer {_token(tenant=bad)}"})
    assert HttpAuth(Auth(keys("acme"), REQUIRED)).tenancy == REQUIRED  # from the keys


def test_tenancy_config_block(tmp_path: Path) -> None:
    """``tenancy: {mode: required}`` parses; another mode is refused; required without auth
    fails before anything starts."""
    path = tmp_path / "c.yaml"
    assert load_config(None).tenancy.mode == "off"
    path.write_text("tenancy: {mode: required}\n")
    assert load_config(path).tenancy == REQUIRED
    path.write_text("tenancy: {mode: sometimes}\n")
    with pytest.raises(ConfigurationError, match="tenancy"):
        load_config(path)
    with pytest.raises(ConfigurationError, match="needs auth"):
        REQUIRED.check(has_auth=False)
    assert REQUIRED.check(has_auth=True) is REQUIRED
    TenancyConfig().check(has_auth=False)


async def test_scoped_reads_over_a_store_page_past_other_tenants() -> None:
    """read_all / read_query within a scope give that tenant's events only, in order, up to
    the limit, forward and backward, even past long runs of another tenant's events; nothing
    for a scope without tenant; everything for an operator."""
    async with chronik.open_store("memory://") as store:
        for i in range(1300):
            tenant = "acme" if i % 5 == 0 else "globex"
            data = EventData("note.added", {"i": i}, tags=["n:1"])
            await store.append(StreamId("note", f"n{i}", tenant), [data], ANY)
        query = chronik.Query.of(types=["note.added"])
        acme = Scope("acme")
        for backward in (False, True):
            found = [e async for e in tenancy.read_all(store, acme, limit=200, backward=backward)]
            assert len(found) == 200 and {e.stream.tenant for e in found} == {"acme"}
            positions = [e.position for e in found]
            assert positions == sorted(positions, reverse=backward)
            q = [e async for e in tenancy.read_query(store, acme, query, None, 260, backward)]
            assert len(q) == 260 and {e.stream.tenant for e in q} == {"acme"}
        assert [e async for e in tenancy.read_all(store, NOBODY)] == []
        assert [e async for e in tenancy.read_query(store, NOBODY, query)] == []
        assert len([e async for e in tenancy.read_all(store, ALL)]) == 1300
