import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from osago.v1 import application_pb2 as _application_pb2
from osago.v1 import events_pb2 as _events_pb2
from osago.v1 import quote_pb2 as _quote_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetQuotesRequest(_message.Message):
    __slots__ = ("application", "idempotency_key", "time_limit", "fresh")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    application: _application_pb2.Application
    idempotency_key: str
    time_limit: _duration_pb2.Duration
    fresh: bool
    def __init__(self, application: _Optional[_Union[_application_pb2.Application, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., fresh: _Optional[bool] = ...) -> None: ...

class GetQuotesResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.QuoteEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.QuoteEvent, _Mapping]] = ...) -> None: ...

class CreateQuoteRequestRequest(_message.Message):
    __slots__ = ("application", "idempotency_key", "time_limit", "fresh")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    application: _application_pb2.Application
    idempotency_key: str
    time_limit: _duration_pb2.Duration
    fresh: bool
    def __init__(self, application: _Optional[_Union[_application_pb2.Application, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., fresh: _Optional[bool] = ...) -> None: ...

class CreateQuoteRequestResponse(_message.Message):
    __slots__ = ("quote_request",)
    QUOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    quote_request: QuoteRequest
    def __init__(self, quote_request: _Optional[_Union[QuoteRequest, _Mapping]] = ...) -> None: ...

class GetQuoteRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetQuoteRequestResponse(_message.Message):
    __slots__ = ("quote_request",)
    QUOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    quote_request: QuoteRequest
    def __init__(self, quote_request: _Optional[_Union[QuoteRequest, _Mapping]] = ...) -> None: ...

class StreamQuoteEventsRequest(_message.Message):
    __slots__ = ("request_id", "after_seq")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    after_seq: int
    def __init__(self, request_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class StreamQuoteEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.QuoteEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.QuoteEvent, _Mapping]] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("request_id", "status", "created_at", "deadline", "insurers", "quotes", "failures", "last_seq")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    INSURERS_FIELD_NUMBER: _ClassVar[int]
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: _events_pb2.SessionStatus
    created_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    insurers: _containers.RepeatedCompositeFieldContainer[_quote_pb2.InsurerRef]
    quotes: _containers.RepeatedCompositeFieldContainer[_quote_pb2.Quote]
    failures: _containers.RepeatedCompositeFieldContainer[_events_pb2.InsurerFailed]
    last_seq: int
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.SessionStatus, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., insurers: _Optional[_Iterable[_Union[_quote_pb2.InsurerRef, _Mapping]]] = ..., quotes: _Optional[_Iterable[_Union[_quote_pb2.Quote, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[_events_pb2.InsurerFailed, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...
