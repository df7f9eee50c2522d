import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from osago.v1 import quote_pb2 as _quote_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InsurerProgressState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSURER_PROGRESS_STATE_UNSPECIFIED: _ClassVar[InsurerProgressState]
    INSURER_PROGRESS_STATE_ACCEPTED: _ClassVar[InsurerProgressState]
    INSURER_PROGRESS_STATE_PENDING: _ClassVar[InsurerProgressState]

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_RUNNING: _ClassVar[SessionStatus]
    SESSION_STATUS_COMPLETED: _ClassVar[SessionStatus]
    SESSION_STATUS_DEADLINE_EXCEEDED: _ClassVar[SessionStatus]
    SESSION_STATUS_UPSTREAM_OUTAGE: _ClassVar[SessionStatus]
    SESSION_STATUS_CANCELLED: _ClassVar[SessionStatus]
INSURER_PROGRESS_STATE_UNSPECIFIED: InsurerProgressState
INSURER_PROGRESS_STATE_ACCEPTED: InsurerProgressState
INSURER_PROGRESS_STATE_PENDING: InsurerProgressState
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_RUNNING: SessionStatus
SESSION_STATUS_COMPLETED: SessionStatus
SESSION_STATUS_DEADLINE_EXCEEDED: SessionStatus
SESSION_STATUS_UPSTREAM_OUTAGE: SessionStatus
SESSION_STATUS_CANCELLED: SessionStatus

class QuoteEvent(_message.Message):
    __slots__ = ("request_id", "seq", "time", "session_started", "quote_received", "insurer_progress", "insurer_failed", "session_finished")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    QUOTE_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    INSURER_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    INSURER_FAILED_FIELD_NUMBER: _ClassVar[int]
    SESSION_FINISHED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    session_started: SessionStarted
    quote_received: QuoteReceived
    insurer_progress: InsurerProgress
    insurer_failed: InsurerFailed
    session_finished: SessionFinished
    def __init__(self, request_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., quote_received: _Optional[_Union[QuoteReceived, _Mapping]] = ..., insurer_progress: _Optional[_Union[InsurerProgress, _Mapping]] = ..., insurer_failed: _Optional[_Union[InsurerFailed, _Mapping]] = ..., session_finished: _Optional[_Union[SessionFinished, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("insurers", "deadline")
    INSURERS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    insurers: _containers.RepeatedCompositeFieldContainer[_quote_pb2.InsurerRef]
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, insurers: _Optional[_Iterable[_Union[_quote_pb2.InsurerRef, _Mapping]]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QuoteReceived(_message.Message):
    __slots__ = ("quote",)
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    quote: _quote_pb2.Quote
    def __init__(self, quote: _Optional[_Union[_quote_pb2.Quote, _Mapping]] = ...) -> None: ...

class InsurerProgress(_message.Message):
    __slots__ = ("insurer_id", "state", "insurer_name")
    INSURER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    insurer_id: str
    state: InsurerProgressState
    insurer_name: str
    def __init__(self, insurer_id: _Optional[str] = ..., state: _Optional[_Union[InsurerProgressState, str]] = ..., insurer_name: _Optional[str] = ...) -> None: ...

class InsurerFailed(_message.Message):
    __slots__ = ("insurer_id", "reason", "message", "insurer_name")
    INSURER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    insurer_id: str
    reason: _quote_pb2.FailureReason
    message: str
    insurer_name: str
    def __init__(self, insurer_id: _Optional[str] = ..., reason: _Optional[_Union[_quote_pb2.FailureReason, str]] = ..., message: _Optional[str] = ..., insurer_name: _Optional[str] = ...) -> None: ...

class SessionFinished(_message.Message):
    __slots__ = ("status", "insurers_asked", "quotes_received", "insurers_failed", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INSURERS_ASKED_FIELD_NUMBER: _ClassVar[int]
    QUOTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    INSURERS_FAILED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: SessionStatus
    insurers_asked: int
    quotes_received: int
    insurers_failed: int
    message: str
    def __init__(self, status: _Optional[_Union[SessionStatus, str]] = ..., insurers_asked: _Optional[int] = ..., quotes_received: _Optional[int] = ..., insurers_failed: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
