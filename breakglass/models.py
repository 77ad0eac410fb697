"""Break-glass access (docs/break-glass.md): the emergency door of the access process.

A person in the on-call group (BREAK_GLASS_GROUP) grants themselves read access at once, for a few
hours, with a second factor and a reason, within the policy of the dataset's classification
(`BreakGlassPolicy`, data: no row means not allowed). Every use (`BreakGlassUse`) is tied to the
real Grant it created (through the same path as an approved request, governance/services/
request_grants.py) and must be reviewed by a security officer other than the person within
BREAK_GLASS_REVIEW_HOURS.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance.models import Classification, Grant

MAX_HOURS = 24


class BreakGlassPolicy(models.Model):
    """Whether data of a classification may be opened by breaking the glass, for how long, with PII or not."""

    classification = models.OneToOneField(
        Classification, on_delete=models.CASCADE, related_name="break_glass_policy", primary_key=True
    )
    allowed = models.BooleanField(default=False, help_text="On-call engineers may grant themselves access.")
    max_hours = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_HOURS)],
        help_text=f"Longest break-glass access, in hours (1 to {MAX_HOURS}).",
    )
    include_pii = models.BooleanField(
        default=False, help_text="The access covers PII columns too (else only the columns without PII)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "break-glass policy"
        verbose_name_plural = "break-glass policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(max_hours__gte=1) & Q(max_hours__lte=MAX_HOURS), name="break_glass_max_hours_range"
            )
        ]

    def __str__(self) -> str:
        if not self.allowed:
            return f"{self.classification}: not allowed"
        return f"{self.classification}: up to {self.max_hours} h{', PII included' if self.include_pii else ''}"


class Outcome(models.TextChoices):
    APPROPRIATE = "appropriate", "Appropriate"
    INAPPROPRIATE = "inappropriate", "Inappropriate"


class BreakGlassUseQuerySet(models.QuerySet["BreakGlassUse"]):
    def unreviewed(self) -> BreakGlassUseQuerySet:
        return self.filter(reviewed_at__isnull=True)


class BreakGlassUse(models.Model):
    """One break of the glass: who, why, for how long, the Grant it made, and its review."""

    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, related_name="break_glass_use")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="break_glass_uses")
    reason = models.TextField()
    hours = models.DecimalField(max_digits=7, decimal_places=4, help_text="Hours of access asked for.")
    include_pii = models.BooleanField(default=False, help_text="Whether the policy let it cover PII columns.")
    activated_at = models.DateTimeField()
    review_due_at = models.DateTimeField()
    assigned_officer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="break_glass_assigned",
        help_text="The security officer who reviews it (any other officer may).",
    )
    overdue_at = models.DateTimeField(null=True, blank=True, help_text="When the review was found overdue.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    review_note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    objects = BreakGlassUseQuerySet.as_manager()

    class Meta:
        ordering = ["-activated_at", "-id"]
        verbose_name = "break-glass use"
        constraints = [
            models.CheckConstraint(
                condition=(Q(reviewed_at__isnull=True) & Q(outcome=""))
                | (Q(reviewed_at__isnull=False) & ~Q(outcome="")),
                name="break_glass_review_complete",
            )
        ]
        indexes = [
            models.Index(
                fields=["review_due_at"], condition=Q(reviewed_at__isnull=True), name="break_glass_open_review_idx"
            )
        ]

    def __str__(self) -> str:
        return f"Break-glass #{self.pk} by {self.user} ({self.activated_at:%Y-%m-%d %H:%M})"

    @property
    def overdue(self) -> bool:
        return self.reviewed_at is None and self.review_due_at <= timezone.now()
