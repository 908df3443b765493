"""The transport consumers ``chronik serve`` runs (config ``consumers``), and the CloudEvents
receiver that feeds them (config ``cloudevents.receiver``).

Each subscription is a normal ``Transport.subscribe`` on the consumers' transport
(``consumers.transport``, default the top-level ``transport``): the one consumer loop, its
failure policy (``retries``, ``backoff``, ``then``) and dead-letter queue. With ``inbox: true``
(the default) the handler is wrapped in a ``StoreInbox`` of the app's store named after the
group: it is called as ``fn(delivery, unit)`` and the message id is recorded in that unit of
work, so a redelivered message (or a CloudEvent POSTed twice) takes effect once.

The receiver is attached only after every consumer has subscribed (so every group exists on
the transport before an event is accepted) and detached first on stop.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from chronik.errors import ConfigurationError, InvalidMessage
from chronik.server.config import Config, import_object
from chronik.store.base import EventStore
from chronik.transports import Consumer, FailurePolicy, StoreInbox, open_transport
from chronik.transports.cloudevents_receiver import CloudEventsReceiver

__all__ = ["consumers_transport", "describe", "receiver_for", "start_consumers"]


def consumers_transport(config: Config) -> str | None:
    """The URL of the transport the consumers (and the receiver) use."""
    return config.consumers.transport or config.transport


def receiver_for(config: Config) -> CloudEventsReceiver:
    """The CloudEvents receiver the configuration enables (topics: the subscriptions')."""
    subscriptions = config.consumers.subscriptions
    if not subscriptions or not consumers_transport(config):
        raise ConfigurationError(
            "cloudevents.receiver needs consumers.subscriptions and a transport to store into "
            "(consumers.transport or transport)"
        )
    try:
        return CloudEventsReceiver({s.topic for s in subscriptions})
    except InvalidMessage as exc:
        raise ConfigurationError(f"consumers.subscriptions: {exc}") from None


def _handler(spec_handler: str, inbox: StoreInbox | None) -> Callable[[Any], Awaitable[Any]]:
    fn = import_object(spec_handler)
    if not callable(fn) or not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"consumer handler {spec_handler} is not an async function")
    return inbox.handler(fn) if inbox is not None else fn


async def start_consumers(
    config: Config, store: EventStore, receiver: CloudEventsReceiver | None = None
) -> Callable[[], Awaitable[None]]:
    """Open the consumers' transport, subscribe every configured consumer, then attach the
    receiver; the function that stops them all (receiver first)."""
    url = consumers_transport(config)
    if url is None:
        raise ConfigurationError("consumers.subscriptions need consumers.transport or transport")
    transport = open_transport(url)
    started: list[Consumer] = []

    async def stop() -> None:
        if receiver is not None:
            receiver.transport = None
        for consumer in started:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await transport.close()

    try:
        await transport.open()
        for spec in config.consumers.subscriptions:
            where = f"consumer {spec.topic}/{spec.group}"
            try:
                policy = FailurePolicy(
                    retries=spec.retries,
                    backoff=spec.backoff,
                    backoff_max=spec.backoff_max,
                    then=spec.then,  # type: ignore[arg-type]  # checked by FailurePolicy
                )
                inbox = StoreInbox(store, spec.group) if spec.inbox else None
                handler = _handler(spec.handler, inbox)
                consumer = await transport.subscribe(
                    spec.topic,
                    spec.group,
                    handler,
                    policy=policy,
                    concurrency=spec.concurrency,
                    dead_letter_queue=spec.dead_letter_queue,
                )
            except InvalidMessage as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
            started.append(consumer)
        if receiver is not None:
            receiver.attach(transport)
    except BaseException:
        await stop()
        raise
    return stop


def describe(config: Config) -> str:
    """The consumers, as ``chronik serve`` prints them."""
    return ", ".join(f"{s.topic}/{s.group}" for s in config.consumers.subscriptions)
