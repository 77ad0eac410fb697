"""Access requests and the approvals that decide them."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from .. import durations
from .catalog import ApprovalStage, Column, Dataset
from .history import governed
from .roles import Role
from .row_filters import snapshot_text


class AccessLevel(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    ADMIN = "admin", "Admin"
    # Differentially private aggregates through the portal (privacy/, docs/privacy.md): the grantee
    # holds no database privilege at all; the portal runs count/sum/mean/histogram for them.
    AGGREGATE = "aggregate", "Aggregates only (differentially private)"


# Levels that are never provisioned on a target: the engine gives them no privilege.
UNPROVISIONED_LEVELS = frozenset({AccessLevel.AGGREGATE.value})


def epsilon_field(help_text: str) -> models.DecimalField:
    """A privacy budget (docs/privacy.md): up to 9999.9999, empty for other levels."""
    return models.DecimalField(max_digits=8, decimal_places=4, null=True, blank=True, help_text=help_text)


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class AccessRequestQuerySet(models.QuerySet["AccessRequest"]):
    def pending(self) -> AccessRequestQuerySet:
        return self.filter(state=RequestState.PENDING)


@governed()
class AccessRequest(models.Model):
    """Someone asks for a level of access to a dataset, for a user or a role, for a while, for a reason.

    The policy that applied at submission is snapshotted in `policy` (stages, maximum duration...),
    so a later edit of the classification does not change the rules under a request in flight.
    State changes only through governance.services.requests, under a row lock.
    """

    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests_made"
    )
    grantee_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="access_requests_received",
    )
    grantee_role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.PROTECT, related_name="access_requests"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="access_requests")
    level = models.CharField(max_length=16, choices=AccessLevel.choices, default=AccessLevel.READ)
    columns = models.ManyToManyField(
        Column, blank=True, related_name="+", help_text="Columns asked for explicitly; empty means the whole table."
    )
    covered_columns = ArrayField(
        models.CharField(max_length=255),
        default=list,
        blank=True,
        help_text="Column names the grant will cover; empty means every column (table-level grant).",
    )
    # PII column -> treatment (governance.models.treatments.Treatment), chosen within the policy.
    treatments = models.JSONField(
        default=dict, blank=True, help_text="PII column -> raw, masked, pseudonymised or nulled."
    )
    justification = models.TextField(blank=True)
    duration = models.DurationField(help_text="How long the access lasts once approved.")
    jit_credentials = models.BooleanField(
        "temporary database login",
        default=False,
        help_text="Also create a personal login role on the target, valid until the access ends (users only).",
    )
    epsilon = epsilon_field("Aggregate access: the privacy budget an approver set (the lowest any stage set wins).")
    # A filtered grant (docs/privacy.md "Row filters"): the filter asked for and, fixed at submission,
    # its text and tree with the grantee's attribute values bound (what the approver sees).
    row_filter = models.ForeignKey(
        "governance.RowFilter", null=True, blank=True, on_delete=models.PROTECT, related_name="requests"
    )
    row_filter_snapshot = models.JSONField(default=dict, blank=True, editable=False)
    state = models.CharField(max_length=16, choices=RequestState.choices, default=RequestState.PENDING)
    current_stage = models.CharField(
        max_length=32,
        choices=ApprovalStage.choices,
        blank=True,
        help_text="The stage waiting for a decision; empty once the request is no longer pending.",
    )
    policy = models.JSONField(default=dict, help_text="The effective policy at submission (governance.policy).")
    submitted_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AccessRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-submitted_at"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(grantee_user__isnull=False) & Q(grantee_role__isnull=True))
                | (Q(grantee_user__isnull=True) & Q(grantee_role__isnull=False)),
                name="access_request_one_grantee",
            ),
            models.CheckConstraint(condition=Q(duration__gt=dt.timedelta(0)), name="access_request_duration_positive"),
            # One pending request per (grantee, dataset, level), also under concurrent submits.
            models.UniqueConstraint(
                fields=["dataset", "level", "grantee_user", "grantee_role"],
                condition=Q(state="pending"),
                nulls_distinct=False,
                name="access_request_one_pending",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "submitted_at"], name="access_request_state_idx"),
            models.Index(fields=["requester", "state"], name="access_request_requester_idx"),
            models.Index(fields=["current_stage", "dataset"], name="access_request_stage_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.level} on {self.dataset.qualified_name} for {self.grantee_display}"

    @property
    def row_filter_text(self) -> str:
        """The row filter asked for, with the grantee's values, in words (empty when unfiltered)."""
        return snapshot_text(self.row_filter_snapshot)

    @property
    def grantee_display(self) -> str:
        if self.grantee_role_id:
            return f"role {self.grantee_role.name}" if self.grantee_role else "role"
        return self.grantee_user.username if self.grantee_user else "?"

    @property
    def required_stages(self) -> list[str]:
        return list(self.policy.get("stages", []))

    @property
    def duration_text(self) -> str:
        """ "6 hours", "14 days": what the approver and the requester read."""
        return durations.words(self.duration)


class Decision(models.TextChoices):
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"


@governed()
class Approval(models.Model):
    """One approver's decision on one stage of a request. Never edited; one per (request, stage)."""

    request = models.ForeignKey(AccessRequest, on_delete=models.PROTECT, related_name="approvals")
    stage = models.CharField(max_length=32, choices=ApprovalStage.choices)
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_digest = models.CharField(max_length=64, blank=True, help_text="Digest of the plan shown when deciding.")
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "decided_at"]
        constraints = [models.UniqueConstraint(fields=["request", "stage"], name="approval_one_per_stage")]

    def __str__(self) -> str:
        return f"{self.get_stage_display()}: {self.decision} by {self.approver}"
