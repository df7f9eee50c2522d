"""The application's JSON form (the protobuf JSON mapping: lowerCamelCase or proto names) parsed
into protobuf with every mistake named by its field, instead of json_format's first error only.

A mistake is reported twice over: `field` is the path the gRPC API uses
(`application.drivers[0].birth_date`) and `jsonPath` the same place in the JSON body
(`drivers[0].birthDate`). Descriptions state the rule and never echo the value: names, VINs and
licence numbers are personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from osago.v1 import application_pb2

ROOT = "application"


@dataclass(frozen=True)
class Violation:
    """One bad field: `field` as the gRPC API names it, `json_path` in the body (None when the
    field is not in the body), `parameter` the query parameter or header that carried it."""

    field: str
    description: str
    json_path: str | None = None
    parameter: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"field": self.field}
        if self.json_path is not None:
            out["jsonPath"] = self.json_path
        if self.parameter is not None:
            out["parameter"] = self.parameter
        out["description"] = self.description
        return out


def parse_application(document: dict[str, Any]) -> tuple[application_pb2.Application, list[Violation]]:
    """The application in `document` and every violation of the JSON mapping found in it."""
    violations: list[Violation] = []
    _check_message(document, application_pb2.Application.DESCRIPTOR, ROOT, "", violations)
    application = application_pb2.Application()
    if violations:
        return application, violations
    try:
        json_format.ParseDict(document, application)
    except json_format.ParseError:
        # Everything json_format rejects is caught above; this is the backstop.
        violations.append(Violation(ROOT, "does not follow the protobuf JSON mapping", ""))
    return application, violations


def json_path(field: str) -> str | None:
    """`application.drivers[0].birth_date` -> `drivers[0].birthDate`; None outside the body."""
    parts = field.split(".")
    if parts[0] != ROOT:
        return None
    descriptor: Descriptor | None = application_pb2.Application.DESCRIPTOR
    out: list[str] = []
    for part in parts[1:]:
        name, bracket, index = part.partition("[")
        known = descriptor.fields_by_name.get(name) if descriptor is not None else None
        out.append((known.json_name if known is not None else _camel(name)) + bracket + index)
        descriptor = known.message_type if known is not None else None
    return ".".join(out)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_message(value: dict[str, Any], descriptor: Descriptor, path: str, jpath: str, out: list[Violation]) -> None:
    by_key = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    seen: dict[str, str] = {}
    oneofs: dict[str, str] = {}
    for key, item in value.items():
        field = by_key.get(key)
        if field is None:
            out.append(Violation(_join(path, key), "unknown field", _join(jpath, key)))
            continue
        here, jhere = _join(path, field.name), _join(jpath, field.json_name)
        if field.name in seen:
            out.append(Violation(here, f"is given twice (as {seen[field.name]} and {key})", jhere))
            continue
        seen[field.name] = key
        oneof = field.containing_oneof
        if oneof is not None and item is not None:
            if oneof.name in oneofs:
                out.append(Violation(here, f"cannot be given together with {oneofs[oneof.name]}", jhere))
                continue
            oneofs[oneof.name] = key
        _check_field(field, item, here, jhere, out)


def _check_field(field: FieldDescriptor, value: Any, path: str, jpath: str, out: list[Violation]) -> None:
    if value is None:
        return  # null means the default value in the protobuf JSON mapping
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        _probe(field, value, path, jpath, out, "must be a JSON object")
        return
    if field.is_repeated:
        if not isinstance(value, list):
            out.append(Violation(path, "must be a JSON array", jpath))
            return
        for i, item in enumerate(value):
            if item is None:
                out.append(Violation(f"{path}[{i}]", "must not be null", f"{jpath}[{i}]"))
            else:
                _check_single(field, item, f"{path}[{i}]", f"{jpath}[{i}]", out, repeated=True)
        return
    _check_single(field, value, path, jpath, out, repeated=False)


def _check_single(
    field: FieldDescriptor, value: Any, path: str, jpath: str, out: list[Violation], *, repeated: bool
) -> None:
    message = field.message_type
    if message is not None and not message.full_name.startswith("google.protobuf."):
        if isinstance(value, dict):
            _check_message(value, message, path, jpath, out)
        else:
            out.append(Violation(path, "must be a JSON object", jpath))
        return
    if field.enum_type is not None and not _enum_value(field, value):
        out.append(Violation(path, _expected(field), jpath))
        return
    # Scalars, enums and well-known types: exactly what json_format accepts for this one field.
    _probe(field, [value] if repeated else value, path, jpath, out, _expected(field))


def _enum_value(field: FieldDescriptor, value: Any) -> bool:
    """A value's name, or a 32-bit integer (proto3 enums are open); json_format would also take
    3.5 or true and silently store something else."""
    assert field.enum_type is not None
    if isinstance(value, str):
        return value in field.enum_type.values_by_name
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def _probe(field: FieldDescriptor, value: Any, path: str, jpath: str, out: list[Violation], expected: str) -> None:
    assert field.containing_type is not None  # a field always belongs to a message
    probe = message_factory.GetMessageClass(field.containing_type)()
    try:
        json_format.ParseDict({field.json_name: value}, probe)
    except json_format.ParseError:
        out.append(Violation(path, expected, jpath))


_EXPECTED = {
    FieldDescriptor.CPPTYPE_INT32: "must be a 32-bit integer",
    FieldDescriptor.CPPTYPE_INT64: "must be a 64-bit integer",
    FieldDescriptor.CPPTYPE_UINT32: "must be a non-negative 32-bit integer",
    FieldDescriptor.CPPTYPE_UINT64: "must be a non-negative 64-bit integer",
    FieldDescriptor.CPPTYPE_DOUBLE: "must be a number",
    FieldDescriptor.CPPTYPE_FLOAT: "must be a number",
    FieldDescriptor.CPPTYPE_BOOL: "must be true or false",
    FieldDescriptor.CPPTYPE_STRING: "must be a string",
}


def _expected(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        names = [v.name for v in field.enum_type.values if v.number != 0]
        return "must be one of " + ", ".join(names)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "must be base64-encoded bytes"
    if field.message_type is not None:
        return f"must be a {field.message_type.name} in its JSON form"
    return _EXPECTED.get(field.cpp_type, "has the wrong type")
