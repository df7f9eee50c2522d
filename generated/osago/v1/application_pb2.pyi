from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VehicleCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VEHICLE_CATEGORY_UNSPECIFIED: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_A: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_B: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_BE: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_C: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_D: _ClassVar[VehicleCategory]
    VEHICLE_CATEGORY_TM: _ClassVar[VehicleCategory]

class VehiclePurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VEHICLE_PURPOSE_UNSPECIFIED: _ClassVar[VehiclePurpose]
    VEHICLE_PURPOSE_PERSONAL: _ClassVar[VehiclePurpose]
    VEHICLE_PURPOSE_TAXI: _ClassVar[VehiclePurpose]

class RegistrationDocumentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRATION_DOCUMENT_TYPE_UNSPECIFIED: _ClassVar[RegistrationDocumentType]
    REGISTRATION_DOCUMENT_TYPE_STS: _ClassVar[RegistrationDocumentType]
    REGISTRATION_DOCUMENT_TYPE_PTS: _ClassVar[RegistrationDocumentType]
    REGISTRATION_DOCUMENT_TYPE_EPTS: _ClassVar[RegistrationDocumentType]

class KbmClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KBM_CLASS_UNSPECIFIED: _ClassVar[KbmClass]
    KBM_CLASS_M: _ClassVar[KbmClass]
    KBM_CLASS_0: _ClassVar[KbmClass]
    KBM_CLASS_1: _ClassVar[KbmClass]
    KBM_CLASS_2: _ClassVar[KbmClass]
    KBM_CLASS_3: _ClassVar[KbmClass]
    KBM_CLASS_4: _ClassVar[KbmClass]
    KBM_CLASS_5: _ClassVar[KbmClass]
    KBM_CLASS_6: _ClassVar[KbmClass]
    KBM_CLASS_7: _ClassVar[KbmClass]
    KBM_CLASS_8: _ClassVar[KbmClass]
    KBM_CLASS_9: _ClassVar[KbmClass]
    KBM_CLASS_10: _ClassVar[KbmClass]
    KBM_CLASS_11: _ClassVar[KbmClass]
    KBM_CLASS_12: _ClassVar[KbmClass]
    KBM_CLASS_13: _ClassVar[KbmClass]
VEHICLE_CATEGORY_UNSPECIFIED: VehicleCategory
VEHICLE_CATEGORY_A: VehicleCategory
VEHICLE_CATEGORY_B: VehicleCategory
VEHICLE_CATEGORY_BE: VehicleCategory
VEHICLE_CATEGORY_C: VehicleCategory
VEHICLE_CATEGORY_D: VehicleCategory
VEHICLE_CATEGORY_TM: VehicleCategory
VEHICLE_PURPOSE_UNSPECIFIED: VehiclePurpose
VEHICLE_PURPOSE_PERSONAL: VehiclePurpose
VEHICLE_PURPOSE_TAXI: VehiclePurpose
REGISTRATION_DOCUMENT_TYPE_UNSPECIFIED: RegistrationDocumentType
REGISTRATION_DOCUMENT_TYPE_STS: RegistrationDocumentType
REGISTRATION_DOCUMENT_TYPE_PTS: RegistrationDocumentType
REGISTRATION_DOCUMENT_TYPE_EPTS: RegistrationDocumentType
KBM_CLASS_UNSPECIFIED: KbmClass
KBM_CLASS_M: KbmClass
KBM_CLASS_0: KbmClass
KBM_CLASS_1: KbmClass
KBM_CLASS_2: KbmClass
KBM_CLASS_3: KbmClass
KBM_CLASS_4: KbmClass
KBM_CLASS_5: KbmClass
KBM_CLASS_6: KbmClass
KBM_CLASS_7: KbmClass
KBM_CLASS_8: KbmClass
KBM_CLASS_9: KbmClass
KBM_CLASS_10: KbmClass
KBM_CLASS_11: KbmClass
KBM_CLASS_12: KbmClass
KBM_CLASS_13: KbmClass

class Application(_message.Message):
    __slots__ = ("vehicle", "owner", "drivers", "unlimited_drivers", "policy_start_date", "usage_months")
    VEHICLE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_DRIVERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_START_DATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_MONTHS_FIELD_NUMBER: _ClassVar[int]
    vehicle: Vehicle
    owner: Owner
    drivers: _containers.RepeatedCompositeFieldContainer[Driver]
    unlimited_drivers: bool
    policy_start_date: str
    usage_months: int
    def __init__(self, vehicle: _Optional[_Union[Vehicle, _Mapping]] = ..., owner: _Optional[_Union[Owner, _Mapping]] = ..., drivers: _Optional[_Iterable[_Union[Driver, _Mapping]]] = ..., unlimited_drivers: _Optional[bool] = ..., policy_start_date: _Optional[str] = ..., usage_months: _Optional[int] = ...) -> None: ...

class Vehicle(_message.Message):
    __slots__ = ("vin", "body_number", "plate", "make", "model", "year", "power_hp", "category", "registration_document", "purpose")
    VIN_FIELD_NUMBER: _ClassVar[int]
    BODY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_FIELD_NUMBER: _ClassVar[int]
    MAKE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    POWER_HP_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    vin: str
    body_number: str
    plate: str
    make: str
    model: str
    year: int
    power_hp: int
    category: VehicleCategory
    registration_document: RegistrationDocument
    purpose: VehiclePurpose
    def __init__(self, vin: _Optional[str] = ..., body_number: _Optional[str] = ..., plate: _Optional[str] = ..., make: _Optional[str] = ..., model: _Optional[str] = ..., year: _Optional[int] = ..., power_hp: _Optional[int] = ..., category: _Optional[_Union[VehicleCategory, str]] = ..., registration_document: _Optional[_Union[RegistrationDocument, _Mapping]] = ..., purpose: _Optional[_Union[VehiclePurpose, str]] = ...) -> None: ...

class RegistrationDocument(_message.Message):
    __slots__ = ("type", "series", "number", "issue_date")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ISSUE_DATE_FIELD_NUMBER: _ClassVar[int]
    type: RegistrationDocumentType
    series: str
    number: str
    issue_date: str
    def __init__(self, type: _Optional[_Union[RegistrationDocumentType, str]] = ..., series: _Optional[str] = ..., number: _Optional[str] = ..., issue_date: _Optional[str] = ...) -> None: ...

class PersonName(_message.Message):
    __slots__ = ("last_name", "first_name", "middle_name")
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    MIDDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    last_name: str
    first_name: str
    middle_name: str
    def __init__(self, last_name: _Optional[str] = ..., first_name: _Optional[str] = ..., middle_name: _Optional[str] = ...) -> None: ...

class Owner(_message.Message):
    __slots__ = ("name", "birth_date", "registration_city", "registration_region", "kbm_class")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_CITY_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_REGION_FIELD_NUMBER: _ClassVar[int]
    KBM_CLASS_FIELD_NUMBER: _ClassVar[int]
    name: PersonName
    birth_date: str
    registration_city: str
    registration_region: str
    kbm_class: KbmClass
    def __init__(self, name: _Optional[_Union[PersonName, _Mapping]] = ..., birth_date: _Optional[str] = ..., registration_city: _Optional[str] = ..., registration_region: _Optional[str] = ..., kbm_class: _Optional[_Union[KbmClass, str]] = ...) -> None: ...

class Driver(_message.Message):
    __slots__ = ("name", "birth_date", "licence_number", "licence_issue_date", "kbm_class")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    LICENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LICENCE_ISSUE_DATE_FIELD_NUMBER: _ClassVar[int]
    KBM_CLASS_FIELD_NUMBER: _ClassVar[int]
    name: PersonName
    birth_date: str
    licence_number: str
    licence_issue_date: str
    kbm_class: KbmClass
    def __init__(self, name: _Optional[_Union[PersonName, _Mapping]] = ..., birth_date: _Optional[str] = ..., licence_number: _Optional[str] = ..., licence_issue_date: _Optional[str] = ..., kbm_class: _Optional[_Union[KbmClass, str]] = ...) -> None: ...
