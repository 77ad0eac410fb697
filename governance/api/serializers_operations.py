"""Shapes of the long operations (catalog sync, reconcile) the API starts and lets callers poll."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ..models import CredentialRotation, Operation
from .validation import StrictTypesMixin


def operation_url(operation: Operation) -> str:
    """Where a caller polls the operation (the `Location` of the 202 that started it)."""
    return f"/api/v1/operations/{operation.pk}/"


class OperationSerializer(serializers.ModelSerializer[Operation]):
    source = serializers.CharField(source="source.name", allow_null=True, default=None)  # type: ignore[assignment]  # a field named like a DRF attribute
    started_by = serializers.SerializerMethodField()
    percent = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Operation
        fields = [
            "id",
            "url",
            "kind",
            "state",
            "source",
            "params",
            "stage",
            "done",
            "total",
            "percent",
            "summary",
            "result",
            "error",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_started_by(self, obj: Operation) -> str | None:
        return obj.started_by.username if obj.started_by is not None else None

    def get_url(self, obj: Operation) -> str:
        return operation_url(obj)


class SyncRequestSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """A catalog sync takes no options (what is read is the source's own settings)."""


class RotationRequestSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """A rotation of the portal's credential takes no options (the source's own settings say where
    its password lives)."""


class CredentialRotationSerializer(serializers.ModelSerializer[CredentialRotation]):
    """One rotation of the portal's own password on a source; never the password."""

    source = serializers.CharField(source="source.name", read_only=True)  # type: ignore[assignment]  # a field named like a DRF attribute

    class Meta:
        model = CredentialRotation
        fields = ["id", "source", "status", "trigger", "started_at", "finished_at", "error"]
        read_only_fields = fields
