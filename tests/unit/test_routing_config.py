"""The ``cluster.routing`` / ``cluster.secret`` options and how `chronik serve` installs the
router from them (chronik.cluster.config, chronik.server.cluster.route_by_affinity)."""

from __future__ import annotations

from pathlib import Path

import pytest

import chronik
from chronik.cluster import ClusterConfig, Membership
from chronik.errors import ConfigurationError, ValidationError
from chronik.server.auth import ApiKey, Auth
from chronik.server.cluster import route_by_affinity
from chronik.server.config import load_config
from chronik.server.forwarding import CommandRouter
from chronik.server.grpc import GrpcServer
from chronik.server.metrics import Metrics
from chronik.server.routing import router_of
from chronik.server.tls import TlsConfig
from chronik.testing.certificates import TestCA

ROOT = Path(__file__).resolve().parents[2]
SECRET = "0123456789abcdef-secret"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"routing": "owner"}, "cluster.routing"),
        ({"routing": ""}, "cluster.routing"),
        ({"secret": "short"}, "cluster.secret"),
        ({"secret": SECRET, "secret_env": "X"}, "cluster.secret_env"),
        ({"secret_env": "CHRONIK_TEST_NO_SUCH_SECRET"}, "cluster.secret_env"),
    ],
)
def test_bad_routing_settings_are_validation_errors_naming_the_field(
    fields: dict[str, str], field: str
) -> None:
    """An unknown routing, a short or missing secret, both secret forms: the field is named."""
    with pytest.raises(ValidationError) as caught:
        ClusterConfig(enabled=True, **fields).check()  # type: ignore[arg-type]
    assert caught.value.field == field


def test_routing_defaults_to_local_and_the_secret_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without routing the node handles what it receives; secret_env reads the environment."""
    assert ClusterConfig().check().routing == "local"
    monkeypatch.setenv("CHRONIK_TEST_SECRET", SECRET)
    config = ClusterConfig(routing="affinity", secret_env="CHRONIK_TEST_SECRET").check()
    assert config.cluster_secret() == SECRET
    assert ClusterConfig(routing="affinity").check().cluster_secret() is None


def test_the_docs_affinity_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The routing section the cluster guide shows loads and passes the checks."""
    monkeypatch.setenv("CHRONIK_CLUSTER_SECRET", SECRET)
    path = ROOT / "docs" / "snippets" / "library-affinity.yaml"
    config = load_config(path)
    cluster = config.cluster.check()
    assert cluster.routing == "affinity" and cluster.cluster_secret() == SECRET
    assert config.grpc.tls is not None and config.grpc.tls.require_client_cert


def _server(auth: Auth | None = None, tls: TlsConfig | None = None) -> GrpcServer:
    return GrpcServer(chronik.Chronik("memory://"), port=1, auth=auth, tls=tls)  # not started


def test_route_by_affinity_installs_one_router_with_the_nodes_tls_identity(
    tmp_path: Path,
) -> None:
    """With gRPC TLS the router calls others with the node's own certificate, trusting
    client_ca; a second install is refused; metrics show its counters."""
    ca = TestCA(tmp_path)
    node = ca.issue("node-a", node=True)
    tls = TlsConfig(cert=str(node.cert), key=str(node.key), client_ca=str(ca.cert))
    server = _server(tls=tls)
    membership = Membership(server.app.store, node_id="node-a", grpc="127.0.0.1:1")
    config = ClusterConfig(enabled=True, node_id="node-a", routing="affinity")
    router = route_by_affinity(config, server.app, server, membership)
    assert isinstance(router, CommandRouter) and router_of(server.app) is router
    assert router.tls is not None and router.tls.cert == str(node.cert)
    assert router.tls.ca == str(ca.cert) and not router.has_secret
    with pytest.raises(ConfigurationError, match="already routes"):
        route_by_affinity(config, server.app, server, membership)
    metrics = Metrics()
    metrics.instrument(server.app)
    router.stats.forwarded, router.stats.fallbacks = 3, 1
    text = metrics.render()[0].decode()
    assert "chronik_routing_forwarded_total 3.0" in text
    assert "chronik_routing_fallbacks_total 1.0" in text


def test_tls_without_a_client_ca_cannot_forward(tmp_path: Path) -> None:
    """A node serving TLS without client_ca has no CA to trust the others by: refused,
    naming grpc.tls.client_ca."""
    ca = TestCA(tmp_path)
    node = ca.issue("node-a", node=True)
    server = _server(tls=TlsConfig(cert=str(node.cert), key=str(node.key)))
    membership = Membership(server.app.store, node_id="node-a", grpc="127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=r"grpc\.tls\.client_ca"):
        route_by_affinity(ClusterConfig(routing="affinity"), server.app, server, membership)
    assert router_of(server.app) is None


def test_auth_needs_the_cluster_secret() -> None:
    """With auth configured, routing by affinity needs cluster.secret (or secret_env)."""
    auth = Auth([ApiKey(name="desk", key="desk-key-1")])
    server = _server(auth=auth)
    membership = Membership(server.app.store, node_id="node-a")
    with pytest.raises(ConfigurationError, match=r"cluster\.secret"):
        route_by_affinity(ClusterConfig(routing="affinity"), server.app, server, membership)
    config = ClusterConfig(routing="affinity", secret=SECRET)
    assert route_by_affinity(config, server.app, server, membership).has_secret
