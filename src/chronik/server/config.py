"""The server's configuration: a YAML file, overridden by CHRONIK_STORE and command-line flags.

store: sqlite:///data/events.db          # flag --store, then $CHRONIK_STORE, then this
grpc: {host: 127.0.0.1, port: 50051}     # raw_append, admin_writes: false; max_message_bytes
http: {host: 127.0.0.1, port: 8080}          # admin_writes, raw_append: false
app: examples.shop.app:build_app         # in-process domains: a factory(store) -> Chronik
registry: myapp.events:registry          # or: a registry and a list of models
domains: [myapp.orders:Order, myapp.customer:customer]
business_logic:                          # remote domains (any language), as in evented-rs
  - {domain: customer, address: 127.0.0.1:50061, timeout: 5}
locks: {orders: {ttl: 30, wait: 10}}     # durable per-aggregate locks (chronik.DurableLock)
auth:
  api_keys: [{name: web, key_env: WEB_KEY, commands: {customer: "*"}}]
consumers:                               # transport consumers (default transport: `transport`)
  subscriptions: [{topic: orders.placed, group: billing, handler: myapp.billing:on_order}]
cloudevents: {receiver: false}           # POST /v1/cloudevents into the consumers' transport
limits: {max_inflight_commands: 256, max_subscriptions: 1000}   # then 429 / RESOURCE_EXHAUSTED
cluster: {enabled: true, node_id: node-a, ttl: 10}   # membership (chronik cluster status)
projection_leases: {lease_ttl: 10, heartbeat: 1}   # a dead node's projections move after lease_ttl
#   cluster.routing: affinity | local (default); cluster.secret / secret_env (with auth)
#   cluster.backend: store (default) | nats (a KV bucket on cluster.nats_url, default the transport)
retention: {domains: {metrics: {max_count: 1000}}, scavenger: {enabled: true, interval: 1h}}
archive: {url: /var/lib/chronik/archive, retain_at_least: 100000, interval: 60}  # old events sealed
tenancy: {mode: required}                # keys / JWTs name a tenant ("*": operator); none: nothing
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any

import msgspec

from chronik.aggregate import Aggregate, AggregateModel, DomainModel
from chronik.aggregate_locks import DurableLock
from chronik.app import Chronik
from chronik.cluster.config import ClusterConfig, check_seconds
from chronik.codec import EventRegistry
from chronik.deadlines import aggregate_deadlines
from chronik.errors import ConfigurationError, ValidationError
from chronik.personal.at_rest import AtRestConfig
from chronik.projections import Projection
from chronik.server.archiving import ArchiveConfig
from chronik.server.http_auth import JwtConfig
from chronik.server.limits import LimitsConfig
from chronik.server.remote import RemoteModel, remote_projector, remote_saga
from chronik.server.retention import RetentionConfig
from chronik.server.tenancy import TenancyConfig
from chronik.server.tls import TlsConfig

__all__ = [
    "DEFAULT_STORE",
    "Config",
    "build_app",
    "build_projections",
    "load_config",
    "setup_observability",
    "resolve_store",
]

DEFAULT_STORE = "sqlite:///data/events.db"


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class GrpcConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 50051
    #: the largest message either way; larger ones are refused with RESOURCE_EXHAUSTED
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=2**31 - 1)] = 4 * 1024 * 1024
    #: EventStore.Append (events written with no business logic in between): off by default
    raw_append: bool = False
    #: Projections admin calls (pause, resume, reset, rebuild, dead-letter retry / drop) on a
    #: server without auth; with auth they need the admin right instead
    admin_writes: bool = False
    #: serve over TLS (grpcs): cert, key, client_ca, require_client_cert (chronik.server.tls)
    tls: TlsConfig | None = None


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8080
    max_body_bytes: int = 1024 * 1024
    #: Host header names served (DNS-rebinding protection); "*": any. Default: the loopback
    #: names when bound to loopback, any otherwise.
    allowed_hosts: list[str] | None = None
    #: admin writes (projection reset, rebuild, pause, dead-letter retry) on a server without
    #: auth; with auth they need the admin right instead
    admin_writes: bool = False
    #: POST /v1/dcb/append (tagged events written with no business logic in between, DCB): off
    #: by default; with auth it also needs the append right
    raw_append: bool = False
    #: the built docs site (`make docs`), served at /docs when the directory exists; the admin
    #: UI then links each page to its docs
    docs_dir: str = "site"
    #: serve over TLS (https): cert, key, client_ca, require_client_cert (chronik.server.tls)
    tls: TlsConfig | None = None


class QueryConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    projection: str
    table: str
    params: list[str] = msgspec.field(default_factory=list)
    order_by: list[str] = msgspec.field(default_factory=list)


class RemoteDomain(msgspec.Struct, forbid_unknown_fields=True):
    domain: str
    address: str
    timeout: float = 5.0
    attempts: int = 3


class RemoteReactor(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    address: str
    types: list[str]
    timeout: float = 5.0


class OutboxConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True  # dispatch when a transport is configured
    batch_size: int = 100
    lease_ttl: float = 10.0


class ProjectionLeasesConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How the projections a node runs hold their leases: a projection (or partition) whose
    process died is taken over once its lease expires, ``lease_ttl`` seconds after the last
    renewal; the owner renews at least every ``heartbeat`` seconds."""

    lease_ttl: float = 10.0
    heartbeat: float = 1.0

    def check(self) -> ProjectionLeasesConfig:
        """This section, checked (ValidationError naming the field)."""
        check_seconds(self.lease_ttl, "projection_leases.lease_ttl", 0.5, 3600.0)
        check_seconds(self.heartbeat, "projection_leases.heartbeat", 0.05, 600.0)
        if not self.lease_ttl > 2 * self.heartbeat:
            raise ValidationError(
                "invalid projection_leases.lease_ttl: must be more than twice the heartbeat "
                f"({self.heartbeat:g} s)",
                field="projection_leases.lease_ttl",
            )
        return self


class LockConfig(msgspec.Struct, forbid_unknown_fields=True):
    ttl: float = 30.0  # seconds a holder's lease lasts unless renewed (every ttl/3)
    wait: float = 10.0  # seconds a command waits for another holder, then LockTimeout


class ObservabilityConfig(msgspec.Struct, forbid_unknown_fields=True):
    tracing: bool = False  # OpenTelemetry spans (extra `otel`; configure the SDK yourself)
    log_format: str = "text"  # or "json"
    log_level: str = "INFO"


class ConsumerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One transport consumer ``chronik serve`` runs (``chronik.server.consumers``)."""

    topic: str
    group: str
    handler: str  # module:function; with inbox, async fn(delivery, unit), else fn(delivery)
    inbox: bool = True  # the message id (a CloudEvent's id) takes effect once (StoreInbox)
    retries: int = 3
    backoff: float = 0.05
    backoff_max: float = 5.0
    then: str = "dead_letter"  # or park, stop
    concurrency: int = 1
    dead_letter_queue: str | None = None  # default: <topic>.<group>.dead


class ConsumersConfig(msgspec.Struct, forbid_unknown_fields=True):
    transport: str | None = None  # default: the top-level transport
    subscriptions: list[ConsumerConfig] = msgspec.field(default_factory=list)


class KnativeConfig(msgspec.Struct, forbid_unknown_fields=True):
    """What ``chronik knative manifests`` writes: a Broker and a Trigger per topic."""

    broker: str = "default"
    namespace: str | None = None
    broker_class: str | None = None  # e.g. MTChannelBasedBroker, Kafka
    service: str = "chronik"  # the Service in front of chronik serve's HTTP port
    service_api_version: str = "v1"  # or serving.knative.dev/v1 for a Knative Service
    retry: int = 5
    backoff_delay: str = "PT0.2S"
    dead_letter_uri: str | None = None


class CloudEventsConfig(msgspec.Struct, forbid_unknown_fields=True):
    #: POST /v1/cloudevents[/{topic}] stores CloudEvents for the consumers: off by default;
    #: with auth it needs the append right
    receiver: bool = False
    knative: KnativeConfig = msgspec.field(default_factory=KnativeConfig)


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True):
    api_keys: list[dict[str, Any]] = msgspec.field(default_factory=list)
    jwt: JwtConfig | None = None


class Config(msgspec.Struct, forbid_unknown_fields=True):
    """The whole configuration file."""

    store: str | None = None
    grpc: GrpcConfig = msgspec.field(default_factory=GrpcConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    queries: list[QueryConfig] = msgspec.field(default_factory=list)
    app: str | None = None
    registry: str | None = None
    domains: list[str] = msgspec.field(default_factory=list)
    business_logic: list[RemoteDomain] = msgspec.field(default_factory=list)
    #: domain -> its durable per-aggregate lock (any configured domain, remote ones included)
    locks: dict[str, LockConfig] = msgspec.field(default_factory=dict)
    projections: str | None = None
    projectors: list[RemoteReactor] = msgspec.field(default_factory=list)
    sagas: list[RemoteReactor] = msgspec.field(default_factory=list)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    transport: str | None = None  # memory://, nats://..., amqp://..., postgresql://...
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    #: the projections' leases: how fast a dead node's projections are taken over
    projection_leases: ProjectionLeasesConfig = msgspec.field(
        default_factory=ProjectionLeasesConfig
    )
    consumers: ConsumersConfig = msgspec.field(default_factory=ConsumersConfig)
    cloudevents: CloudEventsConfig = msgspec.field(default_factory=CloudEventsConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    #: bounded in-flight commands and subscriptions per node (chronik.server.limits)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    #: cluster membership: heartbeat leases, ``chronik cluster status`` (chronik.cluster)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    #: per-domain retention defaults and the leased scavenger (chronik.server.retention)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    #: the archive reads go through, and its leased archiver (chronik.server.archiving)
    archive: ArchiveConfig | None = None
    #: whole payloads compressed and/or encrypted at rest (chronik.personal.at_rest)
    codec: AtRestConfig | None = None
    #: tenant scoping of every request: off (default) or required (chronik.server.tenancy)
    tenancy: TenancyConfig = msgspec.field(default_factory=TenancyConfig)


def load_config(path: str | Path | None) -> Config:
    """The configuration in ``path`` (None: the defaults); ConfigurationError if invalid."""
    if path is None:
        return Config()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return msgspec.convert(data, Config)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigurationError(f"invalid configuration in {path}: {exc}") from None


def resolve_store(flag: str | None, config: Config) -> str:
    """The store URL: the flag, then $CHRONIK_STORE, then the file, then the default."""
    return flag or os.environ.get("CHRONIK_STORE") or config.store or DEFAULT_STORE


def import_object(spec: str) -> Any:
    """The object named by ``module:attribute``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected module:object, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {spec!r}: {exc}") from None
    return obj


def build_app(config: Config, store: str) -> Chronik:
    """The Chronik app the configuration describes, on ``store``."""
    if config.app:
        factory = import_object(config.app)
        if not callable(factory):
            raise ConfigurationError(f"{config.app} is not a factory(store) -> Chronik")
        app = factory(store)
        if not isinstance(app, Chronik):
            raise ConfigurationError(f"{config.app} did not return a Chronik app")
    else:
        registry = import_object(config.registry) if config.registry else EventRegistry()
        if not isinstance(registry, EventRegistry):
            raise ConfigurationError(f"{config.registry} is not an EventRegistry")
        app = Chronik(store=store, registry=registry)
        for spec in config.domains:
            obj = import_object(spec)
            if isinstance(obj, type) and issubclass(obj, Aggregate):
                app.add_model(AggregateModel(obj))
            elif isinstance(obj, DomainModel):
                app.add_model(obj)
            else:
                raise ConfigurationError(f"{spec} is not a DomainModel or Aggregate class")
    for remote in config.business_logic:
        app.add_model(
            RemoteModel(
                remote.domain, remote.address, timeout=remote.timeout, attempts=remote.attempts
            )
        )
    for domain, lock in config.locks.items():
        if domain not in app.bus.domains:
            raise ConfigurationError(f"locks: no configured domain is called {domain!r}")
        app.bus.locks.set(app.bus.model(domain), DurableLock(lock.ttl, lock.wait))
    if config.codec is not None:
        app.registry.at_rest = config.codec.build()
    return app


def build_projections(config: Config, app: Chronik) -> list[Projection]:
    """The projections, remote projectors and sagas the configuration names."""
    found: list[Projection] = []
    if config.projections:
        factory = import_object(config.projections)
        if not callable(factory):
            raise ConfigurationError(f"{config.projections} is not a factory(app) -> [Projection]")
        made = factory(app)
        if not isinstance(made, list) or not all(isinstance(p, Projection) for p in made):
            raise ConfigurationError(f"{config.projections} did not return a list of Projections")
        found.extend(made)
    for p in config.projectors:
        found.append(remote_projector(p.name, p.address, p.types, timeout=p.timeout))
    for s in config.sagas:
        found.append(remote_saga(s.name, s.address, s.types, app.dispatch, timeout=s.timeout))
    found.append(aggregate_deadlines(app.dispatch))
    if config.observability.tracing:
        from chronik.observability import trace_projection

        found = [trace_projection(p) for p in found]
    return found


def setup_observability(config: Config, app: Chronik) -> None:
    """Logging format and level, and command tracing, as configured."""
    import logging

    from chronik.observability import JsonFormatter, trace_commands

    obs = config.observability
    if obs.log_format not in ("text", "json"):
        raise ConfigurationError(f"log_format must be text or json, not {obs.log_format!r}")
    handler = logging.StreamHandler()
    if obs.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(obs.log_level.upper())
    except ValueError:
        raise ConfigurationError(f"unknown log level {obs.log_level!r}") from None
    if obs.tracing:
        trace_commands(app)
