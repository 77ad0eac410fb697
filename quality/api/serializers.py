"""Shapes of the quality API: checks, runs with their results and profile, datasets' states, and the
inputs (strictly typed: a value of the wrong JSON type is a 400 naming the field)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance.api.pagination import MAX_INTEGER
from governance.api.validation import StrictTypesMixin

from ..models import CheckStatus, ColumnProfile, DatasetQuality, Kind, QualityCheck, QualityResult, QualityRun


class QualityCheckSerializer(serializers.ModelSerializer[QualityCheck]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reviewed_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    awaiting_review = serializers.BooleanField(read_only=True)
    last_status = serializers.ChoiceField(
        choices=CheckStatus.choices, allow_blank=True, read_only=True, help_text="Empty until the check first runs."
    )

    class Meta:
        model = QualityCheck
        fields = [
            "id", "dataset", "name", "kind", "column", "params", "threshold", "enabled", "description",
            "created_by", "reviewed_by", "reviewed_at", "awaiting_review", "last_status", "last_value",
            "last_run_at", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class QualityCheckWriteSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=Kind.choices)
    column = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    params = serializers.DictField(required=False, default=dict, help_text="What the kind needs (docs/quality.md).")
    threshold = serializers.FloatField(required=False, default=0.0, min_value=0, max_value=1e15)
    enabled = serializers.BooleanField(required=False, default=True)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class QualityCheckCreateSerializer(QualityCheckWriteSerializer):
    dataset = serializers.IntegerField(min_value=1, max_value=MAX_INTEGER)


class QualityCheckUpdateSerializer(QualityCheckWriteSerializer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, partial=True, **kwargs)


class QualityResultSerializer(serializers.ModelSerializer[QualityResult]):
    check = serializers.CharField(source="check_ref.name", read_only=True)
    check_id = serializers.IntegerField(source="check_ref_id", read_only=True)

    class Meta:
        model = QualityResult
        fields = ["check_id", "check", "status", "value", "threshold", "failing", "examined", "message"]
        read_only_fields = fields


class ColumnProfileSerializer(serializers.ModelSerializer[ColumnProfile]):
    top_values = serializers.SerializerMethodField()
    minimum = serializers.SerializerMethodField()
    maximum = serializers.SerializerMethodField()

    class Meta:
        model = ColumnProfile
        fields = ["column", "rows", "nulls", "distinct", "minimum", "maximum", "top_values", "values_withheld"]
        read_only_fields = fields

    def _shown(self, obj: ColumnProfile) -> bool:
        return bool(self.context.get("show_values")) and not obj.values_withheld

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_minimum(self, obj: ColumnProfile) -> str | None:
        return obj.minimum if self._shown(obj) else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_maximum(self, obj: ColumnProfile) -> str | None:
        return obj.maximum if self._shown(obj) else None

    @extend_schema_field(serializers.ListField(child=serializers.ListField()))
    def get_top_values(self, obj: ColumnProfile) -> list[Any]:
        return list(obj.top_values) if self._shown(obj) else []


class QualityRunSerializer(serializers.ModelSerializer[QualityRun]):
    actor: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    results = QualityResultSerializer(many=True, read_only=True)

    class Meta:
        model = QualityRun
        fields = [
            "id", "dataset", "trigger", "actor", "started_at", "finished_at", "duration_ms", "status",
            "estimated_rows", "sample_percent", "error", "results",
        ]  # fmt: skip
        read_only_fields = fields


class QualityRunDetailSerializer(QualityRunSerializer):
    profile = serializers.SerializerMethodField(
        help_text="Per column: counts for everyone; min, max and most common values (never of a PII column) "
        "for the dataset's stewards, officers, admins, auditors and people with access."
    )

    class Meta(QualityRunSerializer.Meta):
        fields = [*QualityRunSerializer.Meta.fields, "profile"]
        read_only_fields = fields

    @extend_schema_field(ColumnProfileSerializer(many=True))
    def get_profile(self, obj: QualityRun) -> Any:
        rows = obj.profiles.order_by("column")
        return ColumnProfileSerializer(rows, many=True, context=self.context).data


class DatasetQualitySerializer(serializers.ModelSerializer[DatasetQuality]):
    class Meta:
        model = DatasetQuality
        fields = [
            "dataset", "status", "failing_checks", "interval_minutes", "last_run_at", "next_run_at", "running_since",
        ]  # fmt: skip
        read_only_fields = fields
