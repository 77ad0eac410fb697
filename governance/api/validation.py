"""Input is taken as the published schema says, or refused with a 400 naming the field.

DRF was built for HTML forms, where every value arrives as text, so its fields coerce: `{"reason": 0}`
becomes the reason "0", `{"fix": "yes"}` becomes true, `{"duration_days": "7"}` becomes 7, and an
empty slug of a nullable relation becomes null. This API takes JSON only, and its schema
(/api/schema/) promises types: a client that sends a number where a string is due has a bug that
coercion would hide. `StrictTypesMixin` checks each value's JSON type against its field before DRF
sees it, recursively through lists, dicts and nested serializers.

The string rules that JSON Schema cannot infer from a DRF field are declared in the schema by
`string_pattern()` (used by governance/api/schema.py) and enforced by DRF's own validators: no NUL
character (PostgreSQL text cannot hold one), and a field that may not be blank must hold a character
that is not whitespace (DRF trims whitespace before it checks for blank).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import fields, relations, serializers
from rest_framework.exceptions import ValidationError

# Everything str.strip() removes, which is what DRF's CharField trims (the same as Python's `\s`),
# spelled out so that the pattern means the same in ECMA and Python regular expressions.
_SPACE = "\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NO_NUL = "^[^\\u0000]*$"
# For a field that may be blank: drf-spectacular then declares `oneOf: [<this>, {maxLength: 0}]`, so
# this one must not match the empty string too (oneOf means exactly one).
NO_NUL_NOT_EMPTY = "^[^\\u0000]+$"
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{_SPACE}][^\\u0000]*$"


def string_pattern(field: fields.Field) -> str | None:
    """The pattern a request string for `field` must match, when DRF's validation needs one."""
    if isinstance(field, fields.CharField):
        if field.allow_blank:
            return NO_NUL_NOT_EMPTY
        return NOT_BLANK if field.trim_whitespace else NO_NUL
    if isinstance(field, relations.SlugRelatedField):
        return NOT_BLANK  # a slug looked up as given: no NUL, never empty or blank
    return None


def _is_integer(value: Any) -> bool:
    # JSON Schema counts 3.0 as an integer; DRF's IntegerField takes it as 3.
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_error(field: fields.Field, value: Any) -> Any:
    """Why `value` (parsed JSON) is not of the type the schema declares for `field`, or None.

    A message for a scalar; for a list or an object, the errors of its items by index or key, in
    DRF's shape. `null` is left to DRF (`allow_null` decides)."""
    if value is None or field.read_only:
        return None
    if isinstance(field, serializers.ListSerializer):
        if not isinstance(value, list):
            return "Must be a list."
        return _items(field.child, value) if field.child is not None else None
    if isinstance(field, serializers.Serializer):
        return _object(field, value)
    if isinstance(field, fields.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, fields.IntegerField):
        return None if _is_integer(value) else "Must be an integer."
    if isinstance(field, fields.FloatField):
        return None if _is_number(value) else "Must be a number."
    if isinstance(field, fields.ChoiceField) and not isinstance(field, fields.MultipleChoiceField):
        if all(isinstance(choice, str) for choice in field.choices):
            return None if isinstance(value, str) else "Must be a string, one of the choices."
        return None
    if isinstance(field, fields.CharField | fields.DateTimeField | fields.DateField | fields.DurationField):
        if not isinstance(value, str):
            return "Must be a string."
        # The schema's maxLength counts what was sent; DRF's validator counts what is left after it
        # trims surrounding whitespace, so 201 characters starting with a newline would pass a 200 limit.
        limit = getattr(field, "max_length", None)
        if isinstance(field, fields.CharField) and limit is not None and len(value) > limit:
            return f"Ensure this field has no more than {limit} characters."
        return None
    if isinstance(field, relations.SlugRelatedField):
        if not isinstance(value, str):
            return "Must be a string."
        return None if value else "May not be empty (send null for none)."  # DRF would take '' as null
    if isinstance(field, relations.PrimaryKeyRelatedField):
        return None if _is_integer(value) else "Must be an integer."
    if isinstance(field, relations.ManyRelatedField):
        return _items(field.child_relation, value) if isinstance(value, list) else "Must be a list."
    if isinstance(field, fields.ListField | fields.MultipleChoiceField):
        if not isinstance(value, list):
            return "Must be a list."
        child = getattr(field, "child", None)
        return _items(child, value) if child is not None else None
    if isinstance(field, fields.DictField):
        if not isinstance(value, dict):
            return "Must be an object."
        errors = {str(k): [e] for k, v in value.items() if (e := type_error(field.child, v)) is not None}
        return errors or None
    return None  # JSONField and anything else: any JSON value


def _items(child: fields.Field, values: list[Any]) -> Any:
    errors = {i: e if isinstance(e, dict) else [e] for i, v in enumerate(values) if (e := type_error(child, v))}
    return errors or None


def _object(serializer: serializers.Serializer[Any], data: Any) -> Any:
    if not isinstance(data, Mapping):
        return None  # DRF answers "Invalid data. Expected a dictionary"
    errors: dict[str, Any] = {}
    for name, field in serializer.fields.items():
        if field.read_only or name not in data:
            continue
        error = type_error(field, data[name])
        if error is not None:
            errors[name] = error if isinstance(error, dict) else [error]
    return errors or None


class StrictTypesMixin:
    """For input serializers: each value's JSON type must be the one the schema declares (no
    coercion); then DRF validates as usual. Errors name the fields, in DRF's shape (a 400)."""

    def to_internal_value(self, data: Any) -> Any:
        errors = _object(self, data)  # type: ignore[arg-type]
        if errors:
            raise ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]
