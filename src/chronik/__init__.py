"""chronik: CQRS and event sourcing for Python.

The public API is what this module exports; adapters live in ``chronik.store.*`` and are chosen by
URL through ``open_store``.
"""

from chronik.codec import EventRegistry
from chronik.errors import (
    CheckpointFenced,
    ChronikError,
    ConcurrencyError,
    ConfigurationError,
    DeserializationError,
    DuplicateEventError,
    InvalidEventType,
    InvalidExpectedVersion,
    InvalidStreamId,
    MissingExtraError,
    PayloadTooLarge,
    SerializationError,
    StoreClosed,
    StoreUnavailable,
    TooManyEvents,
    UnknownEventType,
    UpcastError,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    EventData,
    Expected,
    ExpectedState,
    Metadata,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
    new_event_id,
)
from chronik.store import EventStore, UnitOfWork, open_store
from chronik.subscriptions import Subscription

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppendResult",
    "Checkpoint",
    "CheckpointFenced",
    "ChronikError",
    "ConcurrencyError",
    "ConfigurationError",
    "DeserializationError",
    "DuplicateEventError",
    "EventData",
    "EventRegistry",
    "EventStore",
    "Expected",
    "ExpectedState",
    "InvalidEventType",
    "InvalidExpectedVersion",
    "InvalidStreamId",
    "JSON",
    "Metadata",
    "MissingExtraError",
    "NO_STREAM",
    "PayloadTooLarge",
    "Position",
    "RecordedEvent",
    "STREAM_EXISTS",
    "SerializationError",
    "Snapshot",
    "StoreClosed",
    "StoreUnavailable",
    "StreamId",
    "StreamInfo",
    "Subscription",
    "TooManyEvents",
    "UnitOfWork",
    "UnknownEventType",
    "UpcastError",
    "ValidationError",
    "WrongExpectedVersion",
    "__version__",
    "new_event_id",
    "open_store",
]
