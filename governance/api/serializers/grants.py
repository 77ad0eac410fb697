"""Grants, provisioning jobs, drift findings and the reconcile request."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ...models import (
    DriftFinding,
    Grant,
    ProvisioningJob,
)
from ..validation import StrictTypesMixin
from .shared import DatasetRefSerializer, UserRefField


class GrantSerializer(serializers.ModelSerializer[Grant]):
    grantee_user = UserRefField(read_only=True, allow_null=True)
    grantee_role = serializers.CharField(source="grantee_role.slug", allow_null=True, default=None)
    dataset = DatasetRefSerializer(read_only=True)
    revoked_by = UserRefField(read_only=True, allow_null=True)
    jit_login = serializers.BooleanField(source="jit_role", read_only=True, help_text="Has a temporary login.")
    in_force = serializers.BooleanField(read_only=True)
    break_glass = serializers.BooleanField(
        source="emergency", read_only=True, help_text="Granted at once by an on-call engineer (break-glass)."
    )

    class Meta:
        model = Grant
        fields = [
            "id",
            "grantee_user",
            "grantee_role",
            "dataset",
            "level",
            "columns",
            "treatments",
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
            "epsilon",
            "break_glass",
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
