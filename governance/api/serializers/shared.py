"""Small shapes the areas share: a user as its username, a dataset reference, an aware time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from ...models import (
    Dataset,
)


class UserRefField(serializers.CharField):
    """A user as its username (read-only)."""

    def to_representation(self, value: Any) -> str:
        return str(value.username)


class DatasetRefSerializer(serializers.ModelSerializer[Dataset]):
    source = serializers.CharField(source="source.name")  # type: ignore[assignment]  # a field named like a DRF attribute

    class Meta:
        model = Dataset
        fields = ["id", "source", "schema", "name"]


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must say its time zone: a naive one would be read in the server's."""

    default_error_messages = {"naive": "Give the time with its time zone (e.g. 2030-01-31T18:00:00Z)."}

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)
