"""Access review campaigns (recertification): who re-confirms which access, by when, and what they
decided. docs/reviews.md.

A campaign names a scope (source, classification, dataset owner, portal role, grants older than N
days). When it starts, the grants in force and the role memberships in scope are copied into
`ReviewItem` rows: the snapshot. Grants made later are not added; a grant that ends meanwhile stays
an item (its decision is recorded, nothing is left to revoke). A recurring campaign is a series:
the beat task starts one occurrence (a campaign of its own, `series` pointing back) per period.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Recurrence(models.TextChoices):
    ONCE = "once", "One-off"
    MONTHLY = "monthly", "Monthly"
    QUARTERLY = "quarterly", "Quarterly"
    CRON = "cron", "Cron expression"


class CampaignStatus(models.TextChoices):
    # A one-off waiting for its start, or a recurring series (it never opens; its occurrences do).
    SCHEDULED = "scheduled", "Scheduled"
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class DeadlineAction(models.TextChoices):
    REVOKE = "revoke", "Revoke what nobody decided"
    KEEP = "keep", "Keep what nobody decided"
    ESCALATE = "escalate", "Escalate to a security officer"


class ReviewCampaign(models.Model):
    """One access review: its scope, schedule, deadline and what happens to undecided items."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # --- scope (every filter set narrows; none set: every grant in force)
    source = models.ForeignKey(
        "governance.DataSource", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    classification = models.ForeignKey(
        "governance.Classification", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    dataset_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    role = models.ForeignKey(
        "governance.Role",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Only the grants this portal role holds (and its memberships, if included).",
    )
    older_than_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Only grants (and memberships) that started more than this many days ago."
    )
    include_memberships = models.BooleanField(
        default=False, help_text="Review role memberships too (of the scoped role, or of every role)."
    )
    # --- schedule
    recurrence = models.CharField(max_length=16, choices=Recurrence.choices, default=Recurrence.ONCE)
    cron = models.CharField(max_length=100, blank=True, help_text="Five fields (minute hour day month weekday), UTC.")
    starts_at = models.DateTimeField(null=True, blank=True, help_text="One-off: when it opens. Series: next start.")
    series = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="occurrences")
    duration_days = models.PositiveIntegerField(default=14, help_text="Days between the start and the deadline.")
    remind_days_before = models.PositiveIntegerField(default=3)
    deadline_action = models.CharField(max_length=16, choices=DeadlineAction.choices, default=DeadlineAction.ESCALATE)
    # --- lifecycle
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.SCHEDULED)
    started_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    deadline_applied_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The audit chain's signed head right after the close was recorded (audit.witnesses.document):
    # `audit_verify --checkpoint` proves that nothing before it was edited afterwards.
    close_checkpoint = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=~Q(recurrence="cron") | ~Q(cron=""), name="review_campaign_cron_given"),
        ]
        indexes = [models.Index(fields=["status", "starts_at"], name="review_campaign_due_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_series(self) -> bool:
        return self.recurrence != Recurrence.ONCE


class Decision(models.TextChoices):
    PENDING = "pending", "Not decided"
    KEEP = "keep", "Keep"
    REVOKE = "revoke", "Revoke"
    SHORTEN = "shorten", "Shorten"


class AssignedVia(models.TextChoices):
    OWNER = "owner", "Dataset owner"
    STEWARD = "steward", "Dataset steward"
    ROLE_OWNER = "role_owner", "Role owner"
    OFFICER = "officer", "Security officer"
    DELEGATED = "delegated", "Delegated"
    ESCALATED = "escalated", "Escalated at the deadline"


class ReviewItem(models.Model):
    """One access under review: a grant or a role membership as it was when the campaign started,
    its reviewer and their decision."""

    campaign = models.ForeignKey(ReviewCampaign, on_delete=models.PROTECT, related_name="items")
    grant = models.ForeignKey("governance.Grant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    membership = models.ForeignKey(
        "governance.RoleMembership", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # --- the snapshot (what the reviewer is asked about, as it was at the start)
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subject_role = models.ForeignKey(
        "governance.Role", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    dataset = models.ForeignKey("governance.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    level = models.CharField(max_length=16, blank=True)
    classification = models.CharField(max_length=100, blank=True)
    restricted = models.BooleanField(default=False, help_text="Keeping it needs a comment.")
    access_started_at = models.DateTimeField()
    access_ends_at = models.DateTimeField(null=True, blank=True)
    # --- the review
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="review_items"
    )
    assigned_via = models.CharField(max_length=16, choices=AssignedVia.choices)
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.PENDING)
    new_ends_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_at_deadline = models.BooleanField(default=False, help_text="Decided by the deadline action.")
    # When the portal recorded the revocation (grant revoked, membership closed); when the target
    # verified it comes from the provisioning jobs (reviews.selectors).
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(grant__isnull=False) & Q(membership__isnull=True))
                | (Q(grant__isnull=True) & Q(membership__isnull=False)),
                name="review_item_one_subject",
            ),
            models.UniqueConstraint(fields=["campaign", "grant"], name="review_item_grant_once"),
            models.UniqueConstraint(fields=["campaign", "membership"], name="review_item_membership_once"),
            models.CheckConstraint(
                condition=Q(decision="pending") | Q(decided_at__isnull=False), name="review_item_decided_at"
            ),
        ]
        indexes = [models.Index(fields=["reviewer", "decision"], name="review_item_inbox_idx")]

    def __str__(self) -> str:
        return f"Review item #{self.pk}: {self.describe()}"

    def describe(self) -> str:
        if self.membership_id:
            return f"{self.subject_user} in role {self.subject_role}"
        who = f"role {self.subject_role}" if self.subject_role_id else str(self.subject_user)
        return f"{self.level} on {self.dataset.qualified_name if self.dataset else '?'} for {who}"
