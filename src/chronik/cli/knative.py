"""``chronik knative manifests``: a Knative Broker and one Trigger per subscribed topic (YAML).

From the configuration's ``consumers.subscriptions`` and ``cloudevents.knative``: each Trigger
filters the broker's events by ``type`` = topic and delivers them to the chronik service's
receiver at ``/v1/cloudevents/<topic>`` (``cloudevents.receiver`` must be on there). One
Trigger per topic, whatever the number of groups: the receiver fans a topic out to its groups
on the server's transport, so a Trigger per group would only deliver duplicates.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any, Final

import typer

from chronik.cli.common import fail
from chronik.server.config import Config, KnativeConfig, load_config

__all__ = ["build_manifests", "knative", "manifests"]

EVENTING: Final = "eventing.knative.dev/v1"
_DNS_BAD = re.compile(r"[^a-z0-9-]+")

knative = typer.Typer(help="Knative Eventing: manifests for a configuration.", no_args_is_help=True)


def _name(prefix: str, topic: str) -> str:
    """A DNS-1123 label (at most 63 chars) for the Trigger of ``topic``."""
    name = _DNS_BAD.sub("-", f"{prefix}-{topic}".lower()).strip("-")
    if len(name) > 63:
        digest = hashlib.sha256(topic.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def _metadata(name: str, k: KnativeConfig, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if k.namespace:
        meta["namespace"] = k.namespace
    meta["labels"] = {"app.kubernetes.io/managed-by": "chronik"}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _delivery(k: KnativeConfig) -> dict[str, Any]:
    delivery: dict[str, Any] = {
        "retry": k.retry,
        "backoffPolicy": "exponential",
        "backoffDelay": k.backoff_delay,
    }
    if k.dead_letter_uri:
        delivery["deadLetterSink"] = {"uri": k.dead_letter_uri}
    return delivery


def build_manifests(config: Config) -> list[dict[str, Any]]:
    """The Broker, then a Trigger per subscribed topic (sorted), as plain dicts."""
    k = config.cloudevents.knative
    groups: dict[str, list[str]] = {}
    for sub in config.consumers.subscriptions:
        groups.setdefault(sub.topic, []).append(sub.group)
    broker_notes = {"eventing.knative.dev/broker.class": k.broker_class} if k.broker_class else {}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": EVENTING,
            "kind": "Broker",
            "metadata": _metadata(k.broker, k, **broker_notes),
            "spec": {"delivery": _delivery(k)},
        }
    ]
    for topic in sorted(groups):
        docs.append(
            {
                "apiVersion": EVENTING,
                "kind": "Trigger",
                "metadata": _metadata(
                    _name(k.service, topic), k, **{"chronik.dev/groups": ",".join(groups[topic])}
                ),
                "spec": {
                    "broker": k.broker,
                    "filter": {"attributes": {"type": topic}},
                    "subscriber": {
                        "ref": {
                            "apiVersion": k.service_api_version,
                            "kind": "Service",
                            "name": k.service,
                            **({"namespace": k.namespace} if k.namespace else {}),
                        },
                        "uri": f"/v1/cloudevents/{topic}",
                    },
                    "delivery": _delivery(k),
                },
            }
        )
    return docs


@knative.command("manifests")
def manifests(
    config: Path = typer.Option(..., "--config", "-c", help="chronik.yaml"),
) -> None:
    """Print the Knative Broker and Triggers (YAML) that feed this configuration's consumers."""
    import yaml

    try:
        loaded = load_config(config)
        if not loaded.consumers.subscriptions:
            raise typer.BadParameter("the configuration has no consumers.subscriptions")
        docs = build_manifests(loaded)
    except Exception as err:  # unreadable or invalid configuration
        raise fail(err) from None
    if not loaded.cloudevents.receiver:
        print(
            "note: cloudevents.receiver is off in this configuration: the service answers 404",
            file=sys.stderr,
        )
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
