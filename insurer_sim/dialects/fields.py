"""Reading a JSON request body field by field, so every bad value is reported with its path."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import date


class FieldError(ValueError):
    """A request body field is missing or malformed; `field` is its path ("" for the body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or 'body'}: {message}")
        self.field = field
        self.message = message


def parse_body(body: bytes, *, list_index: Callable[[str, int], str]) -> Fields:
    """The body as a JSON object; `list_index` spells the path of a list item."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise FieldError("", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise FieldError("", "the body must be a JSON object")
    return Fields(value, "", list_index)


class Fields:
    """A JSON object at `path` inside the body."""

    def __init__(self, value: dict[str, object], path: str, list_index: Callable[[str, int], str]) -> None:
        self._value = value
        self.path = path
        self._list_index = list_index

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> object:
        if self._value.get(key) is None:
            raise FieldError(self.at(key), "is required")
        return self._value[key]

    def text(self, key: str, *, optional: bool = False) -> str:
        """A string; a required one must not be blank, an optional one may be absent ("")."""
        value = self._value.get(key)
        if value is None and optional:
            return ""
        value = self._get(key)
        if not isinstance(value, str):
            raise FieldError(self.at(key), "must be a string")
        if not optional and not value.strip():
            raise FieldError(self.at(key), "must not be empty")
        return value.strip()

    def choice(self, key: str, options: Collection[str]) -> str:
        value = self.text(key)
        if value not in options:
            raise FieldError(self.at(key), f"must be one of {', '.join(options)}")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(self.at(key), "must be an integer")
        if not low <= value <= high:
            raise FieldError(self.at(key), f"must be between {low} and {high}")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise FieldError(self.at(key), "must be true or false")
        return value

    def day(self, key: str, parse: Callable[[str], date | None], form: str) -> date:
        value = self.text(key)
        parsed = parse(value)
        if parsed is None:
            raise FieldError(self.at(key), f"must be a date {form}")
        return parsed

    def obj(self, key: str) -> Fields:
        value = self._get(key)
        if not isinstance(value, dict):
            raise FieldError(self.at(key), "must be an object")
        return Fields(value, self.at(key), self._list_index)

    def objects(self, key: str) -> list[Fields]:
        """A list of objects (absent = empty)."""
        value = self._value.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise FieldError(self.at(key), "must be a list")
        items: list[Fields] = []
        for i, item in enumerate(value):
            path = self._list_index(self.at(key), i)
            if not isinstance(item, dict):
                raise FieldError(path, "must be an object")
            items.append(Fields(item, path, self._list_index))
        return items
