"""Roles, access requests and the decisions on them (approve, deny, cancel, end)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ... import durations
from ...models import (
    AccessLevel,
    AccessRequest,
    Approval,
    ApprovalStage,
    Grant,
    RequestState,
    Role,
    RoleMembership,
    Treatment,
)
from ..validation import StrictTypesMixin
from .shared import AwareDateTimeField, DatasetRefSerializer, UserRefField

# --- roles -------------------------------------------------------------------------------------


class RoleMembershipSerializer(serializers.ModelSerializer[RoleMembership]):
    user = UserRefField(read_only=True)

    class Meta:
        model = RoleMembership
        fields = ["user", "starts_at", "ends_at", "managed_by"]


class RoleSerializer(serializers.ModelSerializer[Role]):
    owner = UserRefField(read_only=True, allow_null=True)
    members = RoleMembershipSerializer(many=True, read_only=True, source="active_memberships")

    class Meta:
        model = Role
        fields = ["slug", "name", "kind", "description", "owner", "members"]


# --- requests ----------------------------------------------------------------------------------


class ApprovalSerializer(serializers.ModelSerializer[Approval]):
    approver = UserRefField(read_only=True)

    class Meta:
        model = Approval
        fields = ["stage", "decision", "approver", "comment", "decided_at"]


class GrantRefSerializer(serializers.ModelSerializer[Grant]):
    class Meta:
        model = Grant
        fields = ["id", "status", "starts_at", "ends_at", "verified_at"]


class AccessRequestSerializer(serializers.ModelSerializer[AccessRequest]):
    requester = UserRefField(read_only=True)
    grantee_user = UserRefField(read_only=True, allow_null=True)
    grantee_role = serializers.CharField(source="grantee_role.slug", allow_null=True, default=None)
    dataset = DatasetRefSerializer(read_only=True)
    columns = serializers.ListField(child=serializers.CharField(), source="covered_columns", read_only=True)
    duration_days = serializers.SerializerMethodField()
    duration_hours = serializers.SerializerMethodField()
    duration = serializers.CharField(source="duration_text", read_only=True, help_text='In words: "6 hours".')
    grant = serializers.SerializerMethodField()
    row_filter = serializers.JSONField(
        source="row_filter_snapshot",
        read_only=True,
        help_text="The row filter asked for: name, expression, the grantee's values and the compiled predicate.",
    )

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "requester",
            "grantee_user",
            "grantee_role",
            "dataset",
            "level",
            "columns",
            "treatments",
            "justification",
            "duration_days",
            "duration_hours",
            "duration",
            "jit_credentials",
            "epsilon",
            "row_filter",
            "state",
            "current_stage",
            "submitted_at",
            "decided_at",
            "decision_reason",
            "grant",
        ]

    def get_duration_days(self, obj: AccessRequest) -> float:
        return round(obj.duration.total_seconds() / 86400, 4)

    def get_duration_hours(self, obj: AccessRequest) -> float:
        return round(obj.duration.total_seconds() / 3600, 4)

    @extend_schema_field(GrantRefSerializer(allow_null=True))
    def get_grant(self, obj: AccessRequest) -> dict[str, Any] | None:
        if obj.state != RequestState.APPROVED:
            return None  # only an approved request has a grant: no lookup for the others
        grant = getattr(obj, "grant", None)
        return GrantRefSerializer(grant).data if grant is not None else None


class AccessRequestDetailSerializer(AccessRequestSerializer):
    approvals = serializers.SerializerMethodField()
    plan = serializers.SerializerMethodField(help_text="The SQL this request runs on its target once approved.")
    provisioning = serializers.SerializerMethodField(help_text="The latest provisioning job of its grant.")

    class Meta(AccessRequestSerializer.Meta):
        fields = [*AccessRequestSerializer.Meta.fields, "approvals", "plan", "provisioning"]

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, obj: AccessRequest) -> Any:
        """The decisions so far; a request the caller just created has none unless it was
        auto-approved (the view says so in the context, and no query is needed)."""
        approvals = self.context.get("approvals")
        if approvals is None:
            approvals = obj.approvals.all()
        return ApprovalSerializer(approvals, many=True).data

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_plan(self, obj: AccessRequest) -> list[str]:
        return list(self.context.get("plan", []))

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_provisioning(self, obj: AccessRequest) -> dict[str, Any] | None:
        job = self.context.get("job")
        if job is None:
            return None
        return {"job": job.pk, "action": job.action, "status": job.status, "last_error": job.last_error}


class AccessRequestCreateSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(help_text="Dataset id.")
    level = serializers.ChoiceField(choices=AccessLevel.choices, default=AccessLevel.READ)
    columns = serializers.ListField(
        child=serializers.CharField(max_length=255),
        required=False,
        default=list,
        max_length=2000,
        help_text="Column names; empty means the whole table (PII columns only where the policy allows).",
    )
    justification = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    duration_days = serializers.IntegerField(
        required=False, min_value=1, max_value=durations.MAX_DAYS, help_text="Days of access."
    )
    duration_hours = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=durations.MAX_HOURS,
        help_text="Hours of access (instead of duration_days).",
    )
    longest_allowed = serializers.BooleanField(required=False, default=False)
    grantee_role = serializers.SlugField(required=False, allow_null=True, default=None)
    jit_credentials = serializers.BooleanField(required=False, default=False)
    treatments = serializers.DictField(
        child=serializers.ChoiceField(choices=Treatment.choices),
        required=False,
        default=dict,
        help_text="PII column -> raw, masked, pseudonymised or nulled, within the policy; unnamed: its default.",
    )
    row_filter = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Id of one of the dataset's row filters."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        days, hours = attrs.get("duration_days"), attrs.get("duration_hours")
        if days is not None and hours is not None:
            raise serializers.ValidationError(
                {
                    "duration_hours": [
                        "Give the duration in days or in hours, not both (duration_days or duration_hours)."
                    ]
                }
            )
        if days is None and hours is None and not attrs.get("longest_allowed"):
            raise serializers.ValidationError(
                {"duration_days": ["Give duration_days or duration_hours, or longest_allowed: true."]}
            )
        return attrs

    @staticmethod
    def duration(attrs: dict[str, Any]) -> dt.timedelta | None:
        if attrs.get("duration_hours"):
            return dt.timedelta(hours=attrs["duration_hours"])
        days = attrs.get("duration_days")
        return dt.timedelta(days=days) if days else None


class GrantEndSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    ends_at = AwareDateTimeField(help_text="The new end, with its time zone (ISO 8601).")
    reason = serializers.CharField(max_length=5000)


class DecisionSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    stage = serializers.ChoiceField(choices=ApprovalStage.choices, required=False, allow_null=True, default=None)


class ApproveSerializer(DecisionSerializer):
    epsilon = serializers.DecimalField(
        max_digits=8,
        decimal_places=4,
        required=False,
        allow_null=True,
        default=None,
        help_text="Aggregate access only: the grant's privacy budget (default and maximum from the settings).",
    )


class DenySerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """A denial says why (the requester sees it): the comment is required here, not optional."""

    comment = serializers.CharField(max_length=5000)
    stage = serializers.ChoiceField(choices=ApprovalStage.choices, required=False, allow_null=True, default=None)


class ReasonSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=5000)


class CancelSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
