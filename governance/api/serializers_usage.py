"""Shapes of the last-used facts and the effective access report (docs/api.md, docs/usage.md)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..selectors.access_report import AccessRow


class LastUseSerializer(serializers.Serializer[Any]):
    state = serializers.ChoiceField(
        choices=["used", "not_seen", "cannot_tell"],
        help_text="used: last_used_at says when; not_seen: no use seen since no_use_seen_since; "
        "cannot_tell: the source cannot say (cannot_tell_reason).",
    )
    last_used_at = serializers.DateTimeField(allow_null=True)
    used_as = serializers.CharField(help_text="The target role (or IAM identity) the use was seen as.")
    no_use_seen_since = serializers.DateTimeField(allow_null=True)
    cannot_tell_reason = serializers.CharField()
    flagged_unused = serializers.BooleanField(
        help_text="In force and unused for USAGE_UNUSED_DAYS (90) days or more: revoking it is suggested."
    )
    text = serializers.CharField(help_text="The same, as one line for people.")


class EffectiveAccessRowSerializer(serializers.Serializer[AccessRow]):
    source = serializers.CharField(source="grant.dataset.source.name")  # type: ignore[assignment]  # a field named like a DRF attribute
    dataset = serializers.IntegerField(source="grant.dataset.pk")
    dataset_name = serializers.CharField(source="grant.dataset.qualified_name")
    classification = serializers.CharField(source="grant.dataset.classification.slug")
    person = serializers.SerializerMethodField(help_text="Username; null for a Role with no member in force.")
    via = serializers.CharField(help_text='"direct", or "role <name>" for access through a portal Role.')
    grant = serializers.IntegerField(source="grant.pk")
    level = serializers.CharField(source="grant.level")
    columns = serializers.ListField(child=serializers.CharField(), source="grant.columns")
    starts_at = serializers.DateTimeField(source="grant.starts_at")
    ends_at = serializers.DateTimeField(source="grant.ends_at")
    last_use = serializers.SerializerMethodField()

    def get_person(self, row: AccessRow) -> str | None:
        return row.person.username if row.person is not None else None

    @extend_schema_field(LastUseSerializer)
    def get_last_use(self, row: AccessRow) -> dict[str, Any]:
        return LastUseSerializer(row.last_use.as_dict()).data
