"""The ``cluster.backend`` configuration (store or nats) and the NATS backend's arguments:
typed errors naming the field, the documented snippet, node ids as KV keys (no server)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from chronik.cluster import ClusterConfig
from chronik.cluster.nats_backend import NatsMembershipBackend, member_key
from chronik.errors import ValidationError
from chronik.server.cluster import membership_backend

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_nats_cluster_config_is_valid() -> None:
    """The NATS membership section the deployment guide shows loads, passes the checks and
    resolves to a KV bucket on the transport's server."""
    from chronik.server.config import load_config

    config = load_config(ROOT / "docs" / "snippets" / "cluster-nats.yaml")
    cluster = config.cluster.check()
    assert cluster.enabled and cluster.backend == "nats"
    backend = membership_backend(cluster, None, config.transport)
    assert isinstance(backend, NatsMembershipBackend)
    assert (backend.url, backend.bucket) == ("nats://nats.internal:4222", "chronik_members")


def test_the_store_backend_stays_the_default() -> None:
    """Without cluster.backend the members live in the app's store."""

    class App:
        store = object()

    assert membership_backend(ClusterConfig(enabled=True), App()) is App.store


def test_node_ids_become_valid_distinct_keys() -> None:
    """Every character a key cannot hold is escaped, so ids map to distinct valid keys."""
    keys = {member_key(i) for i in ("a.b", "a:b", "a@b", "a=2Eb", "a-b_c")}
    assert len(keys) == 5 and member_key("a.b") == "node.a=2Eb"


@pytest.mark.parametrize(
    ("config", "transport", "field"),
    [
        ({"backend": "etcd"}, None, "cluster.backend"),
        ({"backend": "nats"}, None, "cluster.nats_url"),
        ({"backend": "nats"}, "amqp://localhost/", "cluster.nats_url"),
        ({"backend": "nats", "nats_url": "http://x:4222"}, None, "cluster.nats_url"),
        ({"backend": "nats", "nats_url": "nats://"}, None, "cluster.nats_url"),
        ({"backend": "nats", "nats_bucket": "a.b"}, "nats://x:4222", "cluster.nats_bucket"),
    ],
)
def test_bad_nats_cluster_config_is_a_validation_error(
    config: dict[str, object], transport: str | None, field: str
) -> None:
    """A bad cluster.backend, NATS URL or bucket is a ValidationError naming the field."""
    parsed = msgspec.convert(config, ClusterConfig)
    with pytest.raises(ValidationError) as err:
        membership_backend(parsed, None, transport)
    assert err.value.field == field


def test_bad_backend_arguments_are_typed_errors() -> None:
    """The backend refuses a bad URL, bucket or max_age with a ValidationError naming it."""
    for args, kwargs, field in [
        (("localhost:4222",), {}, "url"),
        (("nats://h:4222", "no spaces"), {}, "bucket"),
        (("nats://h:4222",), {"max_age": 10}, "max_age"),
    ]:
        with pytest.raises(ValidationError) as err:
            NatsMembershipBackend(*args, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field
