"""Shapes of the data-subject requests API. A request never shows its identifiers' values: only
which kinds were given (`identifier_kinds`); datasets show counts, how rows matched, and outcomes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.validation import StrictTypesMixin

from ..models import RequestDataset, RequestKind, SubjectRequest


class RequestDatasetSerializer(serializers.ModelSerializer[RequestDataset]):
    dataset_name = serializers.CharField(source="dataset.__str__", read_only=True)

    class Meta:
        model = RequestDataset
        fields = [
            "dataset", "dataset_name", "matched", "paths", "action", "legal_basis", "reason", "outcome",
            "rows_affected", "verified", "error", "executed_at",
        ]  # fmt: skip
        read_only_fields = fields


class SubjectRequestSerializer(serializers.ModelSerializer[SubjectRequest]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approved_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    executed_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    overdue = serializers.SerializerMethodField()

    class Meta:
        model = SubjectRequest
        fields = [
            "id", "kind", "state", "identifier_kinds", "reference", "created_by", "created_at", "due_at", "overdue",
            "extended_at", "extension_reason", "previewed_at", "approved_by", "approved_at", "executed_by",
            "finished_at", "error", "export_downloaded_at",
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


class ExtendSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=2000)
