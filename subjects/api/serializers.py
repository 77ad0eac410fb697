"""Shapes of the data-subject requests API. A request never shows its identifiers' values: only
which kinds were given (`identifier_kinds`); datasets show counts, how rows matched, and outcomes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rest_framework import serializers

from governance.api.pagination import MAX_INTEGER
from governance.api.validation import StrictTypesMixin

from ..models import (
    DatasetHandling,
    HandlingAction,
    LegalBasis,
    Relationship,
    RequestDataset,
    RequestKind,
    SubjectIdentifier,
    SubjectRequest,
)


class RequestDatasetSerializer(serializers.ModelSerializer[RequestDataset]):
    dataset_name = serializers.CharField(source="dataset.__str__", read_only=True)
    legal_basis = serializers.ChoiceField(
        choices=LegalBasis.choices, allow_blank=True, read_only=True, help_text="Empty unless retained."
    )

    class Meta:
        model = RequestDataset
        fields = [
            "dataset", "dataset_name", "matched", "paths", "action", "legal_basis", "reason", "outcome",
            "rows_affected", "verified", "error", "executed_at", "acknowledged_by", "acknowledged_at",
        ]  # fmt: skip
        read_only_fields = fields

    acknowledged_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )


class CorrectionColumnSerializer(serializers.Serializer[Any]):
    dataset = serializers.IntegerField(read_only=True)
    column = serializers.CharField(read_only=True)


class SubjectRequestSerializer(serializers.ModelSerializer[SubjectRequest]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approved_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    executed_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    previewed_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    overdue = serializers.SerializerMethodField()
    correction_columns = CorrectionColumnSerializer(
        many=True,
        read_only=True,
        help_text="A rectification: which columns of which datasets are corrected (never the values).",
    )
    corrections_set_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = SubjectRequest
        fields = [
            "id", "kind", "state", "identifier_kinds", "reference", "self_service", "created_by", "created_at",
            "due_at", "overdue", "extended_at", "extension_reason", "previewed_at", "previewed_by", "approved_by",
            "approved_at", "executed_by", "finished_at", "error", "export_downloaded_at", "correction_columns",
            "corrections_set_by", "corrections_set_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_overdue(self, obj: SubjectRequest) -> bool:
        return obj.overdue()


class SubjectRequestDetailSerializer(SubjectRequestSerializer):
    datasets = RequestDatasetSerializer(many=True, read_only=True)

    class Meta(SubjectRequestSerializer.Meta):
        fields = [*SubjectRequestSerializer.Meta.fields, "datasets"]
        read_only_fields = fields


class SubjectRequestCreateSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=RequestKind.choices)
    identifiers = serializers.DictField(
        child=serializers.CharField(max_length=320, allow_blank=True),
        help_text='The subject\'s identifiers, kind to value: {"email": "..."}; kinds: email, customer_id,'
        " user_id, national_id, phone.",
    )
    reference = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class CorrectionSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(min_value=1, max_value=MAX_INTEGER)
    column = serializers.CharField(max_length=255)
    value = serializers.CharField(
        max_length=1000,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The new value as text (PostgreSQL casts it to the column's type), or null.",
    )


class CorrectionsSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    corrections = serializers.ListField(
        child=CorrectionSerializer(),
        max_length=100,
        help_text="Replaces the request's corrections; each on a dataset its preview matched.",
    )


class RestrictionSerializer(serializers.ModelSerializer[RequestDataset]):
    """A restriction on a dataset, as its owner sees it: no identifier, no request content."""

    dataset_name = serializers.CharField(source="dataset.__str__", read_only=True)
    due_at = serializers.DateTimeField(source="request.due_at", read_only=True)
    acknowledged_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = RequestDataset
        fields = [
            "id", "request", "dataset", "dataset_name", "matched", "paths", "outcome", "executed_at", "due_at",
            "acknowledged_by", "acknowledged_at",
        ]  # fmt: skip
        read_only_fields = fields


class ExtendSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=2000)


class SubjectIdentifierSerializer(serializers.ModelSerializer[SubjectIdentifier]):
    dataset = serializers.IntegerField(source="column.dataset_id", read_only=True)
    column = serializers.CharField(source="column.name", read_only=True)
    decided_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = SubjectIdentifier
        fields = ["id", "dataset", "column", "kind", "status", "evidence", "decided_by", "decided_at", "created_at"]
        read_only_fields = fields


class SuggestSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    source = serializers.CharField(max_length=100, help_text="The data source's name.")  # type: ignore[assignment]  # a field named like a DRF attribute


class RelationshipSerializer(serializers.ModelSerializer[Relationship]):
    declared_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Relationship
        fields = [
            "id", "dataset", "columns", "referenced", "referenced_columns", "origin", "constraint_name",
            "declared_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class RelationshipDeclareSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(min_value=1, max_value=MAX_INTEGER)
    columns = serializers.ListField(child=serializers.CharField(max_length=255), min_length=1, max_length=32)
    referenced = serializers.IntegerField(min_value=1, max_value=MAX_INTEGER)
    referenced_columns = serializers.ListField(child=serializers.CharField(max_length=255), min_length=1, max_length=32)


class HandlingSerializer(serializers.ModelSerializer[DatasetHandling]):
    set_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    set_at = serializers.SerializerMethodField(help_text="Null: never set (the default, erase).")
    legal_basis = serializers.ChoiceField(
        choices=LegalBasis.choices, allow_blank=True, read_only=True, help_text="Empty unless retained."
    )

    def get_set_at(self, obj: DatasetHandling) -> dt.datetime | None:
        return obj.set_at if obj.pk else None

    class Meta:
        model = DatasetHandling
        fields = ["dataset", "action", "legal_basis", "reason", "set_by", "set_at"]
        read_only_fields = fields


class HandlingWriteSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=HandlingAction.choices)
    legal_basis = serializers.ChoiceField(choices=LegalBasis.choices, required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
