import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from osago.v1 import application_pb2 as _application_pb2
from osago.v1 import quote_pb2 as _quote_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class RequestOfferRequest(_message.Message):
    __slots__ = ("request_id", "application")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    application: _application_pb2.Application
    def __init__(self, request_id: _Optional[str] = ..., application: _Optional[_Union[_application_pb2.Application, _Mapping]] = ...) -> None: ...

class RequestOfferResponse(_message.Message):
    __slots__ = ("accepted", "pending", "offer", "failed")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    accepted: OfferAccepted
    pending: OfferPending
    offer: _quote_pb2.Quote
    failed: OfferFailed
    def __init__(self, accepted: _Optional[_Union[OfferAccepted, _Mapping]] = ..., pending: _Optional[_Union[OfferPending, _Mapping]] = ..., offer: _Optional[_Union[_quote_pb2.Quote, _Mapping]] = ..., failed: _Optional[_Union[OfferFailed, _Mapping]] = ...) -> None: ...

class OfferAccepted(_message.Message):
    __slots__ = ("insurer_application_id",)
    INSURER_APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    insurer_application_id: str
    def __init__(self, insurer_application_id: _Optional[str] = ...) -> None: ...

class OfferPending(_message.Message):
    __slots__ = ("polls",)
    POLLS_FIELD_NUMBER: _ClassVar[int]
    polls: int
    def __init__(self, polls: _Optional[int] = ...) -> None: ...

class OfferFailed(_message.Message):
    __slots__ = ("reason", "message", "retry_after")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    reason: _quote_pb2.FailureReason
    message: str
    retry_after: _duration_pb2.Duration
    def __init__(self, reason: _Optional[_Union[_quote_pb2.FailureReason, str]] = ..., message: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetGatewayStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetGatewayStatusResponse(_message.Message):
    __slots__ = ("insurer", "dialect", "base_url", "breaker_state", "in_flight", "requests_total", "offers_total", "failures_total", "started_at", "retries_total", "rejected_by_breaker_total", "breaker_opened_total")
    INSURER_FIELD_NUMBER: _ClassVar[int]
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OFFERS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILURES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_BREAKER_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BREAKER_OPENED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    insurer: _quote_pb2.InsurerRef
    dialect: str
    base_url: str
    breaker_state: BreakerState
    in_flight: int
    requests_total: int
    offers_total: int
    failures_total: int
    started_at: _timestamp_pb2.Timestamp
    retries_total: int
    rejected_by_breaker_total: int
    breaker_opened_total: int
    def __init__(self, insurer: _Optional[_Union[_quote_pb2.InsurerRef, _Mapping]] = ..., dialect: _Optional[str] = ..., base_url: _Optional[str] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., in_flight: _Optional[int] = ..., requests_total: _Optional[int] = ..., offers_total: _Optional[int] = ..., failures_total: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retries_total: _Optional[int] = ..., rejected_by_breaker_total: _Optional[int] = ..., breaker_opened_total: _Optional[int] = ...) -> None: ...
