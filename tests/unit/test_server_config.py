"""chronik.yaml: the store URL's precedence, and clear errors for bad files and specs."""

from __future__ import annotations

from pathlib import Path

import pytest

import chronik
from chronik.server.config import (
    DEFAULT_STORE,
    Config,
    build_app,
    build_projections,
    load_config,
    resolve_store,
)


def test_store_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The flag wins, then CHRONIK_STORE, then the file, then sqlite:///data/events.db."""
    path = tmp_path / "c.yaml"
    path.write_text("store: sqlite:///from-file.db\n")
    config = load_config(path)
    monkeypatch.delenv("CHRONIK_STORE", raising=False)
    assert resolve_store(None, Config()) == DEFAULT_STORE == "sqlite:///data/events.db"
    assert resolve_store(None, config) == "sqlite:///from-file.db"
    monkeypatch.setenv("CHRONIK_STORE", "memory://")
    assert resolve_store(None, config) == "memory://"
    assert resolve_store("sqlite:///flag.db", config) == "sqlite:///flag.db"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("grpc: {port: eighty}\n", "port"),
        ("surprise: 1\n", "surprise"),
        ("store: [unclosed\n", "invalid configuration"),
        ("business_logic: [{domain: customer}]\n", "address"),
    ],
)
def test_bad_files_are_configuration_errors(tmp_path: Path, text: str, match: str) -> None:
    """Unknown keys, wrong types and broken YAML are ConfigurationErrors naming the problem."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(chronik.ConfigurationError, match=match):
        load_config(path)
    with pytest.raises(chronik.ConfigurationError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (Config(app="no_colon"), "module:object"),
        (Config(app="examples.shop.nowhere:build_app"), "cannot import"),
        (Config(app="examples.shop.events:registry"), "not a factory"),
        (Config(registry="examples.shop.app:build_app"), "not an EventRegistry"),
        (
            Config(registry="examples.shop.events:registry", domains=["examples.shop.events:Item"]),
            "not a DomainModel",
        ),
    ],
)
def test_bad_specs_are_configuration_errors(config: Config, match: str) -> None:
    """Specs that do not import, or import the wrong thing, are ConfigurationErrors."""
    with pytest.raises(chronik.ConfigurationError, match=match):
        build_app(config, "memory://")


def test_domains_and_remote_services_from_the_file(tmp_path: Path) -> None:
    """A registry plus domains, and remote business logic and projectors, build an app."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "registry: examples.shop.events:registry\n"
        "domains: ['examples.shop.customer:customer', 'examples.shop.transaction:Transaction']\n"
        "business_logic: [{domain: billing, address: '127.0.0.1:1'}]\n"
        "projections: examples.shop.app:projections\n"
        "projectors: [{name: mirror, address: '127.0.0.1:2', types: [CustomerCreated]}]\n"
    )
    config = load_config(path)
    app = build_app(config, "memory://")
    assert app.bus.domains == ["billing", "customer", "transaction"]
    names = [p.name for p in build_projections(config, app)]
    assert names == ["receipts", "customer_summary", "loyalty", "mirror", "chronik_deadlines"]


def test_http_serves_only_loopback_host_names_when_bound_to_loopback(tmp_path: Path) -> None:
    """Bound to loopback, HTTP allows the loopback Host names; elsewhere any, unless listed."""
    from chronik.cli.serve import allowed_hosts

    assert allowed_hosts(None, "127.0.0.1") == ["localhost", "127.0.0.1", "::1", "127.0.0.1"]
    assert allowed_hosts(None, "[::1]") is not None and allowed_hosts(None, "localhost")
    assert allowed_hosts(None, "0.0.0.0") is None
    assert allowed_hosts(["shop.example"], "0.0.0.0") == ["shop.example"]
    path = tmp_path / "chronik.yaml"
    path.write_text("http:\n  allowed_hosts: [shop.example, localhost]\n")
    assert load_config(str(path)).http.allowed_hosts == ["shop.example", "localhost"]


def test_writes_that_bypass_business_logic_are_off_by_default(tmp_path: Path) -> None:
    """grpc.raw_append, http.admin_writes and http.raw_append default to false and parse when
    given."""
    assert Config().grpc.raw_append is False and Config().http.admin_writes is False
    assert Config().http.raw_append is False
    path = tmp_path / "c.yaml"
    path.write_text("grpc: {raw_append: true}\nhttp: {admin_writes: true, raw_append: true}\n")
    config = load_config(path)
    assert config.grpc.raw_append is True and config.http.admin_writes is True
    assert config.http.raw_append is True


def test_the_shop_demo_enables_admin_writes_but_not_raw_appends() -> None:
    """examples/shop/chronik.yaml (make run, loopback) keeps the admin buttons, not raw appends."""
    config = load_config(Path(__file__).parents[2] / "examples" / "shop" / "chronik.yaml")
    assert config.http.admin_writes is True and config.http.host == "127.0.0.1"
    assert config.grpc.raw_append is False and config.http.raw_append is False


@pytest.mark.parametrize(
    "text",
    [
        "grpc: {max_message_bytes: 10}\n",
        "grpc: {max_message_bytes: 4294967296}\n",
        "grpc: {port: 70000}\n",
        "http: {port: -1}\n",
    ],
)
def test_limits_and_ports_out_of_range_are_refused(tmp_path: Path, text: str) -> None:
    """A message limit or port out of range is a ConfigurationError naming the key."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    key = text.split("{")[1].split(":")[0]
    with pytest.raises(chronik.ConfigurationError, match=key):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("projection_leases: {lease_ttl: 0.1}\n", "projection_leases.lease_ttl"),
        ("projection_leases: {heartbeat: 0}\n", "projection_leases.heartbeat"),
        ("projection_leases: {lease_ttl: 2, heartbeat: 1}\n", "projection_leases.lease_ttl"),
    ],
)
def test_projection_leases_out_of_range_are_refused(tmp_path: Path, text: str, field: str) -> None:
    """A lease ttl or heartbeat that cannot work is a ValidationError naming the field."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(chronik.ValidationError) as caught:
        load_config(path).projection_leases.check()
    assert caught.value.field == field


def test_projection_leases_reach_the_processors_serve_runs(tmp_path: Path) -> None:
    """The configured ttl and heartbeat are the ones every processor of the node holds."""
    from chronik.server.grpc import GrpcServer

    path = tmp_path / "c.yaml"
    path.write_text(
        "app: examples.shop.app:build_app\nprojection_leases: {lease_ttl: 3, heartbeat: 0.5}\n"
    )
    config = load_config(path)
    leases = config.projection_leases.check()
    app = build_app(config, "memory://")
    server = GrpcServer(
        app,
        projections=build_projections(config, app),
        lease_ttl=leases.lease_ttl,
        heartbeat=leases.heartbeat,
    )
    assert server.runner is not None and server.runner.processors
    assert {(p.lease_ttl, p.heartbeat) for p in server.runner.processors.values()} == {(3.0, 0.5)}
