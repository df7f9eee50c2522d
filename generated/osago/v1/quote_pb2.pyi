import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_TIMEOUT: _ClassVar[FailureReason]
    FAILURE_REASON_DEADLINE: _ClassVar[FailureReason]
    FAILURE_REASON_UNAVAILABLE: _ClassVar[FailureReason]
    FAILURE_REASON_DECLINED: _ClassVar[FailureReason]
    FAILURE_REASON_RATE_LIMITED: _ClassVar[FailureReason]
    FAILURE_REASON_CIRCUIT_OPEN: _ClassVar[FailureReason]
    FAILURE_REASON_BAD_RESPONSE: _ClassVar[FailureReason]
    FAILURE_REASON_INSURER_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_INTERNAL: _ClassVar[FailureReason]
    FAILURE_REASON_CANCELLED: _ClassVar[FailureReason]
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_TIMEOUT: FailureReason
FAILURE_REASON_DEADLINE: FailureReason
FAILURE_REASON_UNAVAILABLE: FailureReason
FAILURE_REASON_DECLINED: FailureReason
FAILURE_REASON_RATE_LIMITED: FailureReason
FAILURE_REASON_CIRCUIT_OPEN: FailureReason
FAILURE_REASON_BAD_RESPONSE: FailureReason
FAILURE_REASON_INSURER_ERROR: FailureReason
FAILURE_REASON_INTERNAL: FailureReason
FAILURE_REASON_CANCELLED: FailureReason

class Quote(_message.Message):
    __slots__ = ("insurer_id", "insurer_name", "offer_id", "premium_kopecks", "currency", "breakdown", "valid_until", "purchase_url", "from_cache", "obtained_at")
    INSURER_ID_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    PREMIUM_KOPECKS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_URL_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    OBTAINED_AT_FIELD_NUMBER: _ClassVar[int]
    insurer_id: str
    insurer_name: str
    offer_id: str
    premium_kopecks: int
    currency: str
    breakdown: CoefficientBreakdown
    valid_until: _timestamp_pb2.Timestamp
    purchase_url: str
    from_cache: bool
    obtained_at: _timestamp_pb2.Timestamp
    def __init__(self, insurer_id: _Optional[str] = ..., insurer_name: _Optional[str] = ..., offer_id: _Optional[str] = ..., premium_kopecks: _Optional[int] = ..., currency: _Optional[str] = ..., breakdown: _Optional[_Union[CoefficientBreakdown, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., purchase_url: _Optional[str] = ..., from_cache: _Optional[bool] = ..., obtained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CoefficientBreakdown(_message.Message):
    __slots__ = ("base_rate_kopecks", "kt", "kbm", "kvs", "ko", "km", "ks", "kn", "kp")
    BASE_RATE_KOPECKS_FIELD_NUMBER: _ClassVar[int]
    KT_FIELD_NUMBER: _ClassVar[int]
    KBM_FIELD_NUMBER: _ClassVar[int]
    KVS_FIELD_NUMBER: _ClassVar[int]
    KO_FIELD_NUMBER: _ClassVar[int]
    KM_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    KN_FIELD_NUMBER: _ClassVar[int]
    KP_FIELD_NUMBER: _ClassVar[int]
    base_rate_kopecks: int
    kt: float
    kbm: float
    kvs: float
    ko: float
    km: float
    ks: float
    kn: float
    kp: float
    def __init__(self, base_rate_kopecks: _Optional[int] = ..., kt: _Optional[float] = ..., kbm: _Optional[float] = ..., kvs: _Optional[float] = ..., ko: _Optional[float] = ..., km: _Optional[float] = ..., ks: _Optional[float] = ..., kn: _Optional[float] = ..., kp: _Optional[float] = ...) -> None: ...

class InsurerRef(_message.Message):
    __slots__ = ("insurer_id", "insurer_name")
    INSURER_ID_FIELD_NUMBER: _ClassVar[int]
    INSURER_NAME_FIELD_NUMBER: _ClassVar[int]
    insurer_id: str
    insurer_name: str
    def __init__(self, insurer_id: _Optional[str] = ..., insurer_name: _Optional[str] = ...) -> None: ...
