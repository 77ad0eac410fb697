"""The catalog: classifications, datasets and their columns, lineage, data sources."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ...models import (
    Classification,
    Column,
    Dataset,
    DataSource,
    SslMode,
)
from ...policy import column_pii_tags
from ..validation import StrictTypesMixin


class ClassificationSerializer(serializers.ModelSerializer[Classification]):
    min_duration_hours = serializers.SerializerMethodField(help_text="Shortest grant a request may ask for.")
    max_duration_hours = serializers.SerializerMethodField(help_text="Longest grant a request may ask for.")
    min_duration = serializers.CharField(source="min_duration_text", read_only=True, help_text='In words: "6 hours".')
    max_duration = serializers.CharField(source="max_duration_text", read_only=True, help_text='In words: "30 days".')
    max_duration_days = serializers.FloatField(read_only=True, help_text="The longest, in days (may be a fraction).")

    class Meta:
        model = Classification
        fields = [
            "slug",
            "name",
            "rank",
            "description",
            "approval_stages",
            "min_duration_hours",
            "max_duration_hours",
            "min_duration",
            "max_duration",
            "max_duration_days",
            "justification_required",
            "auto_approve",
            "pii_requires_explicit_request",
            "allow_pii_access",
            "terminate_sessions_on_revoke",
        ]

    def get_min_duration_hours(self, obj: Classification) -> float:
        return round(obj.min_duration.total_seconds() / 3600, 4)

    def get_max_duration_hours(self, obj: Classification) -> float:
        return round(obj.max_duration.total_seconds() / 3600, 4)


class InheritedTagSerializer(serializers.Serializer[Any]):
    tag = serializers.CharField()
    column = serializers.CharField(help_text="schema.table.column the tag is confirmed on.")


class ColumnSerializer(serializers.ModelSerializer[Column]):
    pii_tags = serializers.SerializerMethodField(
        help_text="Sensitive-data tags (PII, PHI, ...): confirmed on the column, or inherited through lineage."
    )
    inherited_from = InheritedTagSerializer(
        many=True, read_only=True, help_text="Tags the column carries because it computes from tagged columns."
    )
    lineage_note = serializers.CharField(
        read_only=True, help_text="Set when the column could not be traced exactly (judged by all the view reads)."
    )

    class Meta:
        model = Column
        fields = [
            "name",
            "data_type",
            "ordinal",
            "is_nullable",
            "description",
            "is_present",
            "pii_tags",
            "inherited_from",
            "lineage_note",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_pii_tags(self, column: Column) -> list[str]:
        # `confirmed_tags` is prefetched by the view (one query for all columns).
        return column_pii_tags(column)


class DatasetSerializer(serializers.ModelSerializer[Dataset]):
    source = serializers.CharField(source="source.name")  # type: ignore[assignment]  # a field named like a DRF attribute
    classification = serializers.CharField(
        source="classification.slug",
        help_text="The effective classification: the strictest of the declared one and of everything it reads.",
    )
    declared_classification = serializers.CharField(
        source="declared_classification.slug", help_text="The dataset's own classification."
    )
    owner = serializers.CharField(source="owner.username", allow_null=True, default=None)
    pii_columns = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Columns with a sensitive-data tag, confirmed or inherited through lineage.",
    )

    class Meta:
        model = Dataset
        fields = [
            "id",
            "source",
            "schema",
            "name",
            "kind",
            "description",
            "tags",
            "classification",
            "declared_classification",
            "owner",
            "is_present",
            "pii_columns",
            "lineage_status",
            "updated_at",
        ]


class LineageNeighbourSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    label = serializers.CharField(help_text="schema.name")  # type: ignore[assignment]  # a field named like a DRF attribute
    classification = serializers.CharField(help_text="Its effective classification (name).")
    via = serializers.CharField(help_text="The function that reads it, when the view's query does not name it.")


class DefinerRiskSerializer(serializers.Serializer[Any]):
    function = serializers.CharField(help_text="A SECURITY DEFINER function that reads the dataset.")
    owner = serializers.CharField()
    public_execute = serializers.BooleanField(help_text="Anyone may call it.")
    evidence = serializers.ChoiceField(
        choices=["depends", "mentions"], help_text="Recorded by PostgreSQL, or named in its body."
    )


class DatasetDetailSerializer(DatasetSerializer):
    columns = ColumnSerializer(many=True, read_only=True, source="present_columns")
    reads = LineageNeighbourSerializer(many=True, read_only=True, source="lineage.upstream")
    read_by = LineageNeighbourSerializer(many=True, read_only=True, source="lineage.downstream")
    lineage_notes = serializers.ListField(child=serializers.CharField(), read_only=True)
    definer_risks = DefinerRiskSerializer(many=True, read_only=True)

    class Meta(DatasetSerializer.Meta):
        fields = [*DatasetSerializer.Meta.fields, "columns", "reads", "read_by", "lineage_notes", "definer_risks"]


class DataSourceSerializer(StrictTypesMixin, serializers.ModelSerializer[DataSource]):
    """Credentials are write-only: `password` is accepted and never returned."""

    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"input_type": "password"}
    )
    default_classification = serializers.SlugRelatedField(
        slug_field="slug", queryset=Classification.objects.all(), allow_null=True, required=False
    )
    owner: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    sslmode = serializers.ChoiceField(choices=SslMode.choices, required=False)

    class Meta:
        model = DataSource
        fields = [
            "id",
            "name",
            "kind",
            "description",
            "host",
            "port",
            "database",
            "username",
            "password",
            "sslmode",
            "ssl_root_cert",
            "password_ref",
            "aws_account_id",
            "aws_region",
            "aws_endpoint_url",
            "include_schemas",
            "default_classification",
            "owner",
            "role_prefix",
            "provisioning_enabled",
            "auto_fix_drift",
            "credential_rotation_days",
            "rotate_secret_ref",
            "credential_changed_at",
            "last_synced_at",
            "last_sync_error",
        ]
        read_only_fields = ["id", "kind", "owner", "credential_changed_at", "last_synced_at", "last_sync_error"]
