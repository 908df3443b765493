import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpectedState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPECTED_ANY: _ClassVar[ExpectedState]
    EXPECTED_NO_STREAM: _ClassVar[ExpectedState]
    EXPECTED_STREAM_EXISTS: _ClassVar[ExpectedState]
EXPECTED_ANY: ExpectedState
EXPECTED_NO_STREAM: ExpectedState
EXPECTED_STREAM_EXISTS: ExpectedState

class Event(_message.Message):
    __slots__ = ("event_id", "domain", "aggregate_id", "sequence", "type", "schema_version", "payload", "metadata", "recorded_at", "position", "tenant", "content_type", "tags")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    domain: str
    aggregate_id: str
    sequence: int
    type: str
    schema_version: int
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    recorded_at: _timestamp_pb2.Timestamp
    position: str
    tenant: str
    content_type: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., schema_version: _Optional[int] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., position: _Optional[str] = ..., tenant: _Optional[str] = ..., content_type: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class NewEvent(_message.Message):
    __slots__ = ("type", "payload", "metadata", "schema_version", "event_id", "content_type", "tags")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    type: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    schema_version: int
    event_id: str
    content_type: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., content_type: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class EventBook(_message.Message):
    __slots__ = ("domain", "aggregate_id", "tenant", "events")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    aggregate_id: str
    tenant: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., tenant: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("sequence", "type", "schema_version", "state")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    type: str
    schema_version: int
    state: bytes
    def __init__(self, sequence: _Optional[int] = ..., type: _Optional[str] = ..., schema_version: _Optional[int] = ..., state: _Optional[bytes] = ...) -> None: ...

class CommandRequest(_message.Message):
    __slots__ = ("domain", "aggregate_id", "type", "payload", "command_id", "metadata", "expected_sequence", "tenant")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    aggregate_id: str
    type: str
    payload: bytes
    command_id: str
    metadata: _containers.ScalarMap[str, str]
    expected_sequence: int
    tenant: str
    def __init__(self, domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., type: _Optional[str] = ..., payload: _Optional[bytes] = ..., command_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., expected_sequence: _Optional[int] = ..., tenant: _Optional[str] = ...) -> None: ...

class CommandResponse(_message.Message):
    __slots__ = ("events", "version", "duplicate", "command_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    version: int
    duplicate: bool
    command_id: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., version: _Optional[int] = ..., duplicate: _Optional[bool] = ..., command_id: _Optional[str] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("domain", "aggregate_id", "tenant", "events", "state", "sequence")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    aggregate_id: str
    tenant: str
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    state: ExpectedState
    sequence: int
    def __init__(self, domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., tenant: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., state: _Optional[_Union[ExpectedState, str]] = ..., sequence: _Optional[int] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("first_sequence", "last_sequence", "position", "positions")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    last_sequence: int
    position: str
    positions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., position: _Optional[str] = ..., positions: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("domain", "aggregate_id", "tenant", "from_sequence", "backward", "limit")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    aggregate_id: str
    tenant: str
    from_sequence: int
    backward: bool
    limit: int
    def __init__(self, domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., tenant: _Optional[str] = ..., from_sequence: _Optional[int] = ..., backward: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("after", "domains", "types", "limit", "backward", "before")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    after: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    types: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    backward: bool
    before: str
    def __init__(self, after: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., types: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., backward: _Optional[bool] = ..., before: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("after", "domains", "types", "query")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    after: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    types: _containers.RepeatedScalarFieldContainer[str]
    query: Query
    def __init__(self, after: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., types: _Optional[_Iterable[str]] = ..., query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "caught_up")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    event: Event
    caught_up: str
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., caught_up: _Optional[str] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ("domain", "prefix", "tenant", "limit", "cursor")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    domain: str
    prefix: str
    tenant: str
    limit: int
    cursor: str
    def __init__(self, domain: _Optional[str] = ..., prefix: _Optional[str] = ..., tenant: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("domain", "aggregate_id", "tenant", "version")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    domain: str
    aggregate_id: str
    tenant: str
    version: int
    def __init__(self, domain: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., tenant: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams", "next_cursor")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    next_cursor: str
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class QueryItem(_message.Message):
    __slots__ = ("types", "tags")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, types: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[QueryItem]
    def __init__(self, items: _Optional[_Iterable[_Union[QueryItem, _Mapping]]] = ...) -> None: ...

class ReadQueryRequest(_message.Message):
    __slots__ = ("query", "after", "limit", "backward")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    query: Query
    after: str
    limit: int
    backward: bool
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ..., backward: _Optional[bool] = ...) -> None: ...

class AppendCondition(_message.Message):
    __slots__ = ("query", "after")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    query: Query
    after: str
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., after: _Optional[str] = ...) -> None: ...

class AppendTaggedRequest(_message.Message):
    __slots__ = ("events", "condition", "domain", "tenant")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    condition: AppendCondition
    domain: str
    tenant: str
    def __init__(self, events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., condition: _Optional[_Union[AppendCondition, _Mapping]] = ..., domain: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class AppendTaggedResponse(_message.Message):
    __slots__ = ("positions", "position")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedScalarFieldContainer[str]
    position: str
    def __init__(self, positions: _Optional[_Iterable[str]] = ..., position: _Optional[str] = ...) -> None: ...

class ContextualCommand(_message.Message):
    __slots__ = ("command", "snapshot", "events", "version")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    command: CommandRequest
    snapshot: Snapshot
    events: _containers.RepeatedCompositeFieldContainer[Event]
    version: int
    def __init__(self, command: _Optional[_Union[CommandRequest, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class BusinessResponse(_message.Message):
    __slots__ = ("events", "rejection", "snapshot")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REJECTION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[NewEvent]
    rejection: str
    snapshot: Snapshot
    def __init__(self, events: _Optional[_Iterable[_Union[NewEvent, _Mapping]]] = ..., rejection: _Optional[str] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class ProjectResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SagaResponse(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[CommandRequest]
    def __init__(self, commands: _Optional[_Iterable[_Union[CommandRequest, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CommandSchema(_message.Message):
    __slots__ = ("type", "json_schema")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    type: str
    json_schema: str
    def __init__(self, type: _Optional[str] = ..., json_schema: _Optional[str] = ...) -> None: ...

class DomainSchema(_message.Message):
    __slots__ = ("domain", "logic", "open", "commands", "note", "events")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LOGIC_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    logic: str
    open: bool
    commands: _containers.RepeatedCompositeFieldContainer[CommandSchema]
    note: str
    events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, domain: _Optional[str] = ..., logic: _Optional[str] = ..., open: _Optional[bool] = ..., commands: _Optional[_Iterable[_Union[CommandSchema, _Mapping]]] = ..., note: _Optional[str] = ..., events: _Optional[_Iterable[str]] = ...) -> None: ...

class EventVersion(_message.Message):
    __slots__ = ("version", "current", "upcaster", "readable")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    UPCASTER_FIELD_NUMBER: _ClassVar[int]
    READABLE_FIELD_NUMBER: _ClassVar[int]
    version: int
    current: bool
    upcaster: str
    readable: bool
    def __init__(self, version: _Optional[int] = ..., current: _Optional[bool] = ..., upcaster: _Optional[str] = ..., readable: _Optional[bool] = ...) -> None: ...

class EventSchema(_message.Message):
    __slots__ = ("type", "schema_version", "aliases", "json_schema", "domains", "versions")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    type: str
    schema_version: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    json_schema: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.RepeatedCompositeFieldContainer[EventVersion]
    def __init__(self, type: _Optional[str] = ..., schema_version: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ..., json_schema: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., versions: _Optional[_Iterable[_Union[EventVersion, _Mapping]]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("domains", "events")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[DomainSchema]
    events: _containers.RepeatedCompositeFieldContainer[EventSchema]
    def __init__(self, domains: _Optional[_Iterable[_Union[DomainSchema, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[EventSchema, _Mapping]]] = ...) -> None: ...

class ProjectionStatus(_message.Message):
    __slots__ = ("name", "state", "version", "generation", "building", "position", "build_position", "head", "lag_events", "lag_seconds", "events_per_s", "processed", "last_error", "heartbeat", "alive", "owner", "dead_letters", "horizon_events", "horizon_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    BUILD_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_EVENTS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    version: int
    generation: int
    building: int
    position: str
    build_position: str
    head: str
    lag_events: int
    lag_seconds: float
    events_per_s: float
    processed: int
    last_error: str
    heartbeat: float
    alive: bool
    owner: str
    dead_letters: int
    horizon_events: int
    horizon_seconds: float
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., version: _Optional[int] = ..., generation: _Optional[int] = ..., building: _Optional[int] = ..., position: _Optional[str] = ..., build_position: _Optional[str] = ..., head: _Optional[str] = ..., lag_events: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., events_per_s: _Optional[float] = ..., processed: _Optional[int] = ..., last_error: _Optional[str] = ..., heartbeat: _Optional[float] = ..., alive: _Optional[bool] = ..., owner: _Optional[str] = ..., dead_letters: _Optional[int] = ..., horizon_events: _Optional[int] = ..., horizon_seconds: _Optional[float] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("projection", "event_id", "generation", "position", "stream", "sequence", "type", "error", "attempts", "blocked", "parked_at")
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    PARKED_AT_FIELD_NUMBER: _ClassVar[int]
    projection: str
    event_id: str
    generation: int
    position: str
    stream: str
    sequence: int
    type: str
    error: str
    attempts: int
    blocked: bool
    parked_at: float
    def __init__(self, projection: _Optional[str] = ..., event_id: _Optional[str] = ..., generation: _Optional[int] = ..., position: _Optional[str] = ..., stream: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., blocked: _Optional[bool] = ..., parked_at: _Optional[float] = ...) -> None: ...

class ListProjectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProjectionsResponse(_message.Message):
    __slots__ = ("projections",)
    PROJECTIONS_FIELD_NUMBER: _ClassVar[int]
    projections: _containers.RepeatedCompositeFieldContainer[ProjectionStatus]
    def __init__(self, projections: _Optional[_Iterable[_Union[ProjectionStatus, _Mapping]]] = ...) -> None: ...

class ProjectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("name", "to")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    name: str
    to: str
    def __init__(self, name: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class DeadLetterRequest(_message.Message):
    __slots__ = ("name", "event_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    event_id: str
    def __init__(self, name: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class DeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters",)
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class ActionResponse(_message.Message):
    __slots__ = ("request_id", "projection", "action")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    projection: str
    action: str
    def __init__(self, request_id: _Optional[str] = ..., projection: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class DropResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    def __init__(self, dropped: _Optional[int] = ...) -> None: ...

class RepartitionRequest(_message.Message):
    __slots__ = ("name", "partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: int
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[int] = ...) -> None: ...

class ForgetSubjectRequest(_message.Message):
    __slots__ = ("subject", "reason")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject: str
    reason: str
    def __init__(self, subject: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ForgetSubjectResponse(_message.Message):
    __slots__ = ("subject", "key_deleted", "by", "audit_event_id", "snapshots_dropped", "dead_letters_scrubbed")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    KEY_DELETED_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    AUDIT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_SCRUBBED_FIELD_NUMBER: _ClassVar[int]
    subject: str
    key_deleted: bool
    by: str
    audit_event_id: str
    snapshots_dropped: int
    dead_letters_scrubbed: int
    def __init__(self, subject: _Optional[str] = ..., key_deleted: _Optional[bool] = ..., by: _Optional[str] = ..., audit_event_id: _Optional[str] = ..., snapshots_dropped: _Optional[int] = ..., dead_letters_scrubbed: _Optional[int] = ...) -> None: ...

class VerifySubjectRequest(_message.Message):
    __slots__ = ("subject", "canaries", "tables")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    subject: str
    canaries: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subject: _Optional[str] = ..., canaries: _Optional[_Iterable[str]] = ..., tables: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyHit(_message.Message):
    __slots__ = ("where", "what")
    WHERE_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    where: str
    what: str
    def __init__(self, where: _Optional[str] = ..., what: _Optional[str] = ...) -> None: ...

class VerifySubjectResponse(_message.Message):
    __slots__ = ("subject", "clean", "searched", "hits", "envelopes")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CLEAN_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    subject: str
    clean: bool
    searched: _containers.RepeatedScalarFieldContainer[str]
    hits: _containers.RepeatedCompositeFieldContainer[VerifyHit]
    envelopes: int
    def __init__(self, subject: _Optional[str] = ..., clean: _Optional[bool] = ..., searched: _Optional[_Iterable[str]] = ..., hits: _Optional[_Iterable[_Union[VerifyHit, _Mapping]]] = ..., envelopes: _Optional[int] = ...) -> None: ...

class ListForgottenRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ForgottenSubject(_message.Message):
    __slots__ = ("subject", "forgotten_at_us")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_AT_US_FIELD_NUMBER: _ClassVar[int]
    subject: str
    forgotten_at_us: int
    def __init__(self, subject: _Optional[str] = ..., forgotten_at_us: _Optional[int] = ...) -> None: ...

class ListForgottenResponse(_message.Message):
    __slots__ = ("subjects",)
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    subjects: _containers.RepeatedCompositeFieldContainer[ForgottenSubject]
    def __init__(self, subjects: _Optional[_Iterable[_Union[ForgottenSubject, _Mapping]]] = ...) -> None: ...

class RedactEventRequest(_message.Message):
    __slots__ = ("event_id", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RedactEventResponse(_message.Message):
    __slots__ = ("event_id", "stream", "sequence", "type", "by", "payload_sha256", "audit_event_id", "rewritten")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUDIT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    stream: str
    sequence: int
    type: str
    by: str
    payload_sha256: str
    audit_event_id: str
    rewritten: bool
    def __init__(self, event_id: _Optional[str] = ..., stream: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., by: _Optional[str] = ..., payload_sha256: _Optional[str] = ..., audit_event_id: _Optional[str] = ..., rewritten: _Optional[bool] = ...) -> None: ...
