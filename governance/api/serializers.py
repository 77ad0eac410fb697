"""Serializers: shapes of the API's resources. Reads only; writes are validated here for shape and
then done by the services (policy, separation of duties, audit), never by `serializer.save()`.
Every input serializer takes JSON types as the schema declares them, without coercion
(`StrictTypesMixin`, governance/api/validation.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiToken, TokenScope, User
from audit.models import AuditEvent

from .. import durations
from ..models import (
    AccessLevel,
    AccessRequest,
    Approval,
    ApprovalStage,
    Classification,
    Column,
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    ProvisioningJob,
    RequestState,
    Role,
    RoleMembership,
    SslMode,
)
from ..policy import column_pii_tags
from .validation import StrictTypesMixin

# --- small shared shapes -------------------------------------------------------------------------


class UserRefField(serializers.CharField):
    """A user as its username (read-only)."""

    def to_representation(self, value: Any) -> str:
        return str(value.username)


class DatasetRefSerializer(serializers.ModelSerializer[Dataset]):
    source = serializers.CharField(source="source.name")  # type: ignore[assignment]  # a field named like a DRF attribute

    class Meta:
        model = Dataset
        fields = ["id", "source", "schema", "name"]


# --- catalog ---------------------------------------------------------------------------------------


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
            "last_synced_at",
            "last_sync_error",
        ]
        read_only_fields = ["id", "kind", "owner", "last_synced_at", "last_sync_error"]


# --- roles -----------------------------------------------------------------------------------------


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


# --- requests ----------------------------------------------------------------------------------------


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
            "justification",
            "duration_days",
            "duration_hours",
            "duration",
            "jit_credentials",
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


class GrantEndSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    ends_at = AwareDateTimeField(help_text="The new end, with its time zone (ISO 8601).")
    reason = serializers.CharField(max_length=5000)


class DecisionSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    stage = serializers.ChoiceField(choices=ApprovalStage.choices, required=False, allow_null=True, default=None)


class DenySerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """A denial says why (the requester sees it): the comment is required here, not optional."""

    comment = serializers.CharField(max_length=5000)
    stage = serializers.ChoiceField(choices=ApprovalStage.choices, required=False, allow_null=True, default=None)


class ReasonSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=5000)


class CancelSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


# --- grants and provisioning ------------------------------------------------------------------------


class GrantSerializer(serializers.ModelSerializer[Grant]):
    grantee_user = UserRefField(read_only=True, allow_null=True)
    grantee_role = serializers.CharField(source="grantee_role.slug", allow_null=True, default=None)
    dataset = DatasetRefSerializer(read_only=True)
    revoked_by = UserRefField(read_only=True, allow_null=True)
    jit_login = serializers.BooleanField(source="jit_role", read_only=True, help_text="Has a temporary login.")
    in_force = serializers.BooleanField(read_only=True)

    class Meta:
        model = Grant
        fields = [
            "id",
            "grantee_user",
            "grantee_role",
            "dataset",
            "level",
            "columns",
            "status",
            "in_force",
            "starts_at",
            "ends_at",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
            "reason",
            "verified_at",
            "source_request",
            "jit_login",
        ]


class ProvisioningJobSerializer(serializers.ModelSerializer[ProvisioningJob]):
    source = serializers.SerializerMethodField()  # type: ignore[assignment]  # a field named like a DRF attribute

    class Meta:
        model = ProvisioningJob
        fields = [
            "id",
            "grant",
            "membership",
            "source",
            "action",
            "status",
            "attempts",
            "last_error",
            "statements",
            "queued_at",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "waiting_since",
            "duration_ms",
        ]

    def get_source(self, job: ProvisioningJob) -> str | None:
        if job.grant_id is not None and job.grant is not None:
            return str(job.grant.dataset.source.name)
        return str(job.source.name) if job.source is not None else None


class DriftFindingSerializer(serializers.ModelSerializer[DriftFinding]):
    source = serializers.CharField(source="source.name")  # type: ignore[assignment]  # a field named like a DRF attribute
    resolved_by = UserRefField(read_only=True, allow_null=True)

    class Meta:
        model = DriftFinding
        fields = [
            "id",
            "source",
            "dataset",
            "principal",
            "object_schema",
            "object_name",
            "column",
            "privilege",
            "kind",
            "detail",
            "found_at",
            "run_id",
            "resolved_at",
            "resolved_by",
            "resolution",
        ]


class ReconcileRequestSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    fix = serializers.BooleanField(default=False)


# --- audit -------------------------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "actor_username",
            "source",
            "ip_address",
            "user_agent",
            "request_id",
            "action",
            "outcome",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "reason",
            "metadata",
        ]


# --- tokens ------------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    user = UserRefField(read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=TokenScope.choices))

    class Meta:
        model = ApiToken
        fields = ["key_id", "name", "user", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]


# --- AWS: S3 datasets and IAM identities ------------------------------------------------------------


class S3DatasetRegisterSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """An S3 prefix of an AWS source to govern as a dataset (docs/aws.md)."""

    bucket = serializers.CharField(max_length=63)
    prefix = serializers.CharField(max_length=255, allow_blank=True, default="")
    description = serializers.CharField(allow_blank=True, default="")
    classification = serializers.SlugRelatedField(
        slug_field="slug", queryset=Classification.objects.all(), required=False, allow_null=True, default=None
    )
    owner = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.filter(is_active=True),
        required=False,
        allow_null=True,
        default=None,
    )


class S3DatasetSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF attribute
    location = serializers.CharField()
    classification = serializers.CharField()


class PrincipalMapSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """Map a person (`user`) or a portal role (`role`, its slug) to an identity that already exists on
    the source: a PostgreSQL login, or on AWS `user/NAME` / `role/NAME`."""

    name = serializers.CharField(max_length=200)
    user = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.all(), required=False)
    role = serializers.SlugRelatedField(slug_field="slug", queryset=Role.objects.all(), required=False)


class PrincipalSerializer(serializers.Serializer[Any]):
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF attribute
    name = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    role = serializers.CharField(allow_null=True)
