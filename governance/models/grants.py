"""Grants: the desired state of who holds which access, until when."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .catalog import Dataset
from .history import governed
from .requests import UNPROVISIONED_LEVELS, AccessLevel, AccessRequest, epsilon_field
from .roles import Role


class GrantStatus(models.TextChoices):
    # Desired state recorded; the provisioning engine has not applied it yet.
    APPROVED = "approved", "Approved (awaiting provisioning)"
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Provisioning failed"


def in_force_q(at: dt.datetime | None = None) -> Q:
    """The one definition of "in force": started, not ended, not revoked (as a filter, also for
    annotations); :meth:`Grant.is_in_force` is the same test on a loaded row."""
    now = at or timezone.now()
    return Q(starts_at__lte=now, ends_at__gt=now, revoked_at__isnull=True)


class GrantQuerySet(models.QuerySet["Grant"]):
    def active(self, at: dt.datetime | None = None) -> GrantQuerySet:
        """The grants in force (:func:`in_force_q`)."""
        return self.filter(in_force_q(at))

    def provisioned(self) -> GrantQuerySet:
        """Grants the engine and the reconcilers hold on targets: all but the levels that carry no
        database privilege (aggregate access runs through the portal, docs/privacy.md)."""
        return self.exclude(level__in=UNPROVISIONED_LEVELS)


@governed(exclude=("jit_password_encrypted",))
class Grant(models.Model):
    """A time-bounded right to access a dataset, for a user or a role. Never deleted.

    Ending a grant sets `revoked_at`/`revoked_by`/`revoke_reason` (or lets `ends_at` pass); the row
    stays as the record of who had what, when, and because of which request.
    """

    grantee_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="grants"
    )
    grantee_role = models.ForeignKey(Role, null=True, blank=True, on_delete=models.PROTECT, related_name="grants")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="grants")
    level = models.CharField(max_length=16, choices=AccessLevel.choices)
    epsilon = epsilon_field(
        "Aggregate access: the total privacy budget (epsilon) of this grant; privacy/ tracks what is spent."
    )
    columns = ArrayField(
        models.CharField(max_length=255),
        default=list,
        blank=True,
        help_text="Column-level grant on these columns; empty means the whole table.",
    )
    # The request's column treatments, kept: anything but raw is held through a governed view.
    treatments = models.JSONField(
        default=dict, blank=True, help_text="PII column -> treatment (snapshot of the request)."
    )
    status = models.CharField(max_length=16, choices=GrantStatus.choices, default=GrantStatus.APPROVED)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    revoke_reason = models.TextField(blank=True)
    reason = models.TextField(blank=True, help_text="Why the grant exists (the request's justification).")
    plan_digest = models.CharField(
        max_length=64, blank=True, help_text="Digest of the plan the approvers saw (governance.provisioning)."
    )
    verified_at = models.DateTimeField(null=True, blank=True, help_text="When the target was last verified.")
    source_request = models.OneToOneField(
        AccessRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="grant"
    )
    # JIT credentials (governance/services/jit.py): a temporary LOGIN role on the target, member of
    # the grantee's principal role, VALID UNTIL ends_at, dropped when the grant ends. The password is
    # kept only as a MultiFernet token until the grantee reveals it once; then the token is cleared.
    # The request's row filter with the grantee's values, as approved; compiled to the package's policy.
    row_filter_snapshot = models.JSONField(default=dict, blank=True, editable=False)
    jit_role = models.CharField(
        max_length=63, blank=True, help_text="Temporary login role on the target (empty: no JIT credentials)."
    )
    jit_password_encrypted = models.TextField(blank=True, editable=False)
    jit_revealed_at = models.DateTimeField(null=True, blank=True, help_text="When the grantee saw the password.")
    jit_dropped_at = models.DateTimeField(null=True, blank=True, help_text="When the login role was dropped.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="grant_ends_after_start"),
            models.CheckConstraint(
                condition=(Q(grantee_user__isnull=False) & Q(grantee_role__isnull=True))
                | (Q(grantee_user__isnull=True) & Q(grantee_role__isnull=False)),
                name="grant_one_grantee",
            ),
        ]
        indexes = [
            models.Index(fields=["dataset", "ends_at"], name="grant_dataset_end_idx"),
            models.Index(fields=["grantee_user", "ends_at"], name="grant_user_end_idx"),
            # The end scheduler (every minute) and the expiry sweep look for grants by end alone.
            models.Index(fields=["ends_at"], name="grant_open_end_idx", condition=Q(revoked_at__isnull=True)),
        ]

    def __str__(self) -> str:
        who = f"role {self.grantee_role}" if self.grantee_role_id else str(self.grantee_user)
        return f"{self.level} on {self.dataset.qualified_name} for {who}"

    @property
    def emergency(self) -> bool:
        """Granted at once without approval stages (break-glass, docs/break-glass.md): its request's
        policy snapshot says so. Lists load `source_request` with the grant (no query per row)."""
        req = self.source_request if self.source_request_id else None
        return bool(req is not None and req.policy.get("emergency"))

    def is_in_force(self, at: dt.datetime | None = None) -> bool:
        """:func:`in_force_q` on this row: started, not ended, not revoked."""
        now = at or timezone.now()
        return self.revoked_at is None and self.starts_at <= now < self.ends_at
