"""Property-based fuzzing of validation (hypothesis): any application, however odd its texts and
numbers, gets a list of violations (never an exception), each naming a field of the
application and never echoing what was sent; normalising an application first changes nothing."""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from osago.v1 import application_pb2

from osago_common.validation import normalise_text, normalise_vin, validate_application

TODAY = date(2026, 3, 1)
texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(
        ["А123ВС77", "A123BC77", "Ａ１２３ＢＣ７７", "XTA21099042765439", "ХТА21099042765439", "\u202eevil"]
    ),
)


def message_of(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value: st.SearchStrategy[Any]
        if field.message_type is not None:
            value = message_of(field.message_type, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            value = texts
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = st.booleans()
        else:  # int32 and enums (open: any 32-bit value)
            value = st.integers(-(2**31), 2**31 - 1)
        if field.is_repeated:
            value = st.lists(value, max_size=8)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def build(message: Message, values: dict[str, Any]) -> Message:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None:
            if field.is_repeated:
                for item in value:
                    build(getattr(message, name).add(), item)
            else:
                build(getattr(message, name), value)
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


applications = message_of(application_pb2.Application.DESCRIPTOR).map(
    lambda values: build(application_pb2.Application(), values)
)


def strings(message: Message) -> list[str]:
    found: list[str] = []
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            found.append(value)
        elif field.message_type is not None:
            for child in value if field.is_repeated else [value]:
                found += strings(child)
    return found


@settings(max_examples=400, deadline=None)
@given(applications)
def test_any_application_gets_violations_naming_its_fields_and_never_echoing_them(app: Message) -> None:
    assert isinstance(app, application_pb2.Application)
    violations = validate_application(app, TODAY)
    # Long enough not to be a piece of a rule's own example (the plate rule shows "А123ВС77").
    sent = [s.strip() for s in strings(app) if len(s.strip()) >= 10]
    for violation in violations:
        assert violation.field.startswith("application")
        assert violation.description and violation.description.isprintable()
        assert not any(s in violation.description for s in sent), violation


@settings(max_examples=200, deadline=None)
@given(applications)
def test_normalising_first_changes_no_verdict(app: Message) -> None:
    assert isinstance(app, application_pb2.Application)
    normal = application_pb2.Application()
    normal.CopyFrom(app)
    normalise_text(normal)
    refused_before = {v.field for v in validate_application(app, TODAY) if "control" in v.description}
    if not refused_before:
        assert validate_application(normal, TODAY) == validate_application(app, TODAY)


@given(st.text(alphabet="АВЕКМНОРСТУХ0123456789abcdefghjklmnprstuvwxyz", min_size=17, max_size=17))
def test_a_vin_reads_cyrillic_look_alikes_as_latin(vin: str) -> None:
    normal = normalise_vin(vin)
    assert normal == normal.upper() and not any("CYRILLIC" in unicodedata.name(c, "") for c in normal)


def test_control_and_invisible_characters_are_refused_in_any_text() -> None:
    app = application_pb2.Application()
    app.owner.name.last_name = "Ivanov\u202e"
    app.vehicle.make = "Lada\n"
    app.owner.registration_city = "Mos\x00cow"
    fields = {v.field: v.description for v in validate_application(app, TODAY)}
    for path in ("application.owner.name.last_name", "application.vehicle.make", "application.owner.registration_city"):
        assert fields[path] == "must not contain control or invisible formatting characters"


def test_a_name_mixing_scripts_in_one_word_is_refused_but_each_script_alone_is_fine() -> None:
    app = application_pb2.Application()
    app.owner.name.last_name = "Ивaнов"  # a Latin "a" among Cyrillic letters
    app.owner.name.first_name = "Ivan"
    app.owner.name.middle_name = "Иванович"
    fields = {v.field: v.description for v in validate_application(app, TODAY)}
    assert fields["application.owner.name.last_name"] == "must not mix Cyrillic and Latin letters in one word"
    assert "application.owner.name.first_name" not in fields and "application.owner.name.middle_name" not in fields


def test_full_width_digits_and_latin_look_alikes_make_a_valid_plate() -> None:
    app = application_pb2.Application()
    app.vehicle.plate = "Ａ１２３BC７７"
    assert "application.vehicle.plate" not in {v.field for v in validate_application(app, TODAY)}
