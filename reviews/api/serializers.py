"""Shapes of the review API: campaigns with progress, items with their decision and verification,
and the inputs (strictly typed: a value of the wrong JSON type is a 400 naming the field)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance.api.pagination import MAX_INTEGER
from governance.api.serializers import AwareDateTimeField
from governance.api.validation import StrictTypesMixin
from governance.models import Classification, DataSource, Role

from ..models import DeadlineAction, Recurrence, ReviewCampaign, ReviewItem
from ..selectors import revocation_verified_at, scope_words

MAX_BULK = 200


class ReviewCampaignSerializer(serializers.ModelSerializer[ReviewCampaign]):
    source: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(  # type: ignore[assignment]  # a field named like a DRF attribute
        slug_field="name", read_only=True, allow_null=True
    )
    classification: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    role: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    dataset_owner: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    scope = serializers.SerializerMethodField()
    total = serializers.IntegerField(read_only=True, help_text="Items in the snapshot.")
    decided = serializers.IntegerField(read_only=True, help_text="Items decided.")

    class Meta:
        model = ReviewCampaign
        fields = [
            "id", "name", "description", "status", "scope", "source", "classification", "dataset_owner", "role",
            "older_than_days", "include_memberships", "recurrence", "cron", "starts_at", "series", "duration_days",
            "remind_days_before", "deadline_action", "started_at", "deadline_at", "deadline_applied_at", "closed_at",
            "close_checkpoint", "total", "decided",
        ]  # fmt: skip
        read_only_fields = fields

    def get_scope(self, obj: ReviewCampaign) -> str:
        return scope_words(obj)


class ReviewCampaignCreateSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5000, required=False, default="", allow_blank=True)
    source: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(  # type: ignore[assignment]  # a field named like a DRF attribute
        slug_field="name", queryset=DataSource.objects.all(), required=False, allow_null=True, default=None
    )
    classification: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", queryset=Classification.objects.all(), required=False, allow_null=True, default=None
    )
    role: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", queryset=Role.objects.all(), required=False, allow_null=True, default=None
    )
    dataset_owner = serializers.CharField(
        max_length=150, required=False, allow_null=True, default=None, help_text="Username of the datasets' owner."
    )
    older_than_days = serializers.IntegerField(
        min_value=1, max_value=36500, required=False, allow_null=True, default=None
    )
    include_memberships = serializers.BooleanField(required=False, default=False)
    recurrence = serializers.ChoiceField(choices=Recurrence.choices, required=False, default=Recurrence.ONCE)
    cron = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    starts_at = AwareDateTimeField(required=False, allow_null=True, default=None)
    duration_days = serializers.IntegerField(min_value=1, max_value=365, required=False, default=14)
    remind_days_before = serializers.IntegerField(min_value=0, max_value=365, required=False, default=3)
    deadline_action = serializers.ChoiceField(
        choices=DeadlineAction.choices, required=False, default=DeadlineAction.ESCALATE
    )


class ReviewItemSerializer(serializers.ModelSerializer[ReviewItem]):
    kind = serializers.SerializerMethodField()
    subject_user: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    subject_role: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    dataset = serializers.SerializerMethodField(help_text="schema.name of the dataset (none for a membership).")
    reviewer: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    decided_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    revocation_verified_at = serializers.SerializerMethodField(
        help_text="When the provisioning job verified on the target that the access was gone."
    )

    class Meta:
        model = ReviewItem
        fields = [
            "id", "campaign", "kind", "grant", "membership", "subject_user", "subject_role", "dataset", "level",
            "classification", "access_started_at", "access_ends_at", "reviewer", "assigned_via", "decision",
            "new_ends_at", "comment", "decided_by", "decided_at", "decided_at_deadline", "revoked_at",
            "revocation_verified_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_kind(self, obj: ReviewItem) -> str:
        return "membership" if obj.membership_id else "grant"

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_dataset(self, obj: ReviewItem) -> str | None:
        return obj.dataset.qualified_name if obj.dataset else None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_revocation_verified_at(self, obj: ReviewItem) -> str | None:
        at = revocation_verified_at(obj)
        return at.isoformat() if at else None


class ItemDecisionSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    decision = serializers.ChoiceField(choices=["keep", "revoke", "shorten"])
    comment = serializers.CharField(max_length=5000, required=False, default="", allow_blank=True)
    new_ends_at = AwareDateTimeField(required=False, allow_null=True, default=None, help_text="For shorten.")


class BulkItemDecisionSerializer(ItemDecisionSerializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_INTEGER),
        min_length=1,
        max_length=MAX_BULK,
        help_text=f"Ids of review items, at most {MAX_BULK}: all are decided or none.",
    )


class DelegateSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    to = serializers.CharField(max_length=150, help_text="Username of the new reviewer.")
    comment = serializers.CharField(max_length=5000, required=False, default="", allow_blank=True)
