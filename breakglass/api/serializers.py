"""Shapes of the break-glass API: a use (with its grant's state) and the inputs (strictly typed: a
value of the wrong JSON type is a 400 naming the field)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.pagination import MAX_INTEGER
from governance.api.validation import StrictTypesMixin

from ..models import MAX_HOURS, BreakGlassUse, Outcome


class BreakGlassUseSerializer(serializers.ModelSerializer[BreakGlassUse]):
    user: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    assigned_officer: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    reviewed_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    dataset = serializers.IntegerField(source="grant.dataset_id", read_only=True)
    dataset_name = serializers.CharField(source="grant.dataset.qualified_name", read_only=True)
    grant_status = serializers.CharField(source="grant.status", read_only=True)
    starts_at = serializers.DateTimeField(source="grant.starts_at", read_only=True)
    ends_at = serializers.DateTimeField(source="grant.ends_at", read_only=True)
    columns = serializers.ListField(child=serializers.CharField(), source="grant.columns", read_only=True)
    hours = serializers.FloatField(read_only=True)
    overdue = serializers.BooleanField(read_only=True)
    break_glass = serializers.SerializerMethodField(help_text="Always true: the grant is marked as break-glass.")

    class Meta:
        model = BreakGlassUse
        fields = [
            "id", "grant", "grant_status", "break_glass", "user", "dataset", "dataset_name", "columns", "reason",
            "hours", "include_pii", "activated_at", "starts_at", "ends_at", "review_due_at", "assigned_officer",
            "overdue", "overdue_at", "outcome", "review_note", "reviewed_by", "reviewed_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_break_glass(self, use: BreakGlassUse) -> bool:
        return True


class ActivateSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(min_value=1, max_value=MAX_INTEGER)
    reason = serializers.CharField(max_length=2000, help_text="The incident and its ticket.")
    hours = serializers.FloatField(
        min_value=0.01, max_value=MAX_HOURS, help_text="How long; at most the classification's max_hours."
    )
    otp_token = serializers.CharField(max_length=32, help_text="The code of the caller's authenticator.")
    temporary_login = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also a temporary database login valid until the access ends (its password is "
        "revealed once, to the caller, on the grant's page in the portal).",
    )


class ReviewSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
