"""Rotations of the portal's own credential on a source, and what a failed one leaves open."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .catalog import DataSource


class RotationStatus(models.TextChoices):
    # The new password is generated and stored (encrypted, `pending_secret`) before the target is
    # touched: if the process dies after ALTER ROLE, the password the target now has is not lost.
    PENDING = "pending", "Pending"
    ROTATED = "rotated", "Rotated"
    # The old password works again (never changed, or put back); `error` says why.
    FAILED = "failed", "Failed, old password kept"


class RotationTrigger(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    MANUAL = "manual", "On demand"


class CredentialRotationQuerySet(models.QuerySet["CredentialRotation"]):
    def open_findings(self) -> CredentialRotationQuerySet:
        """The one definition of an open rotation finding: a failure no later rotation resolved."""
        return self.filter(status=RotationStatus.FAILED, resolved_at__isnull=True)


class CredentialRotation(models.Model):
    """One attempt to rotate the portal's login password on one source.

    Written only by `governance.services.credentials`. A failed attempt is a finding: it stays open
    (`resolved_at` empty) until a later rotation of the same source succeeds. At most one attempt per
    source is pending at a time (the partial unique constraint is the rotation's lock).
    """

    source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="credential_rotations")
    trigger = models.CharField(max_length=16, choices=RotationTrigger.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=16, choices=RotationStatus.choices, default=RotationStatus.PENDING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # The new password, encrypted like DataSource.password_encrypted, only while pending (and kept if
    # a failure could not put the old one back: then it is the password the target has).
    pending_secret = models.TextField(blank=True, editable=False)
    error = models.TextField(blank=True, help_text="Why it failed (never a secret).")
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="When a later rotation succeeded.")

    objects = CredentialRotationQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source"], condition=Q(status="pending"), name="credential_rotation_one_pending"
            ),
        ]
        indexes = [models.Index(fields=["source", "-started_at"], name="credential_rotation_source_idx")]

    def __str__(self) -> str:
        return f"Rotation #{self.pk} of {self.source_id} ({self.status})"

    def __repr__(self) -> str:
        return f"<CredentialRotation {self.pk} {self.status}>"
