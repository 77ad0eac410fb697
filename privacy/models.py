"""Differentially private aggregates (docs/privacy.md): what an owner declares about an
aggregates-only dataset, and what each aggregate grant has spent of its budget.

The dataset's `aggregates_only` flag and the grant's total budget (`Grant.epsilon`) live in
governance, because request and approval policy reads them there; everything else is here.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q

from governance.models import Dataset, Grant


class PrivacyPolicy(models.Model):
    """The owner's declaration for one dataset: the privacy unit and how many rows one unit may
    contribute to any answer (extra rows of a unit are dropped in SQL before aggregating)."""

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="privacy_policy")
    unit_column = models.CharField(
        max_length=255,
        blank=True,
        help_text="The column identifying a person (e.g. customer_id); empty: each row is its own unit.",
    )
    contribution_limit = models.PositiveIntegerField(
        default=1, help_text="The most rows one unit contributes to an answer (k)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "privacy policies"
        constraints = [models.CheckConstraint(condition=Q(contribution_limit__gte=1), name="privacy_k_positive")]

    def __str__(self) -> str:
        return f"privacy policy of {self.dataset.qualified_name}"

    @property
    def unit_label(self) -> str:
        return self.unit_column or "each row"


class NumericBound(models.Model):
    """Declared bounds of a numeric column: every value is clamped to [lower, upper] in SQL, which
    is what bounds the sensitivity of sums and means."""

    policy = models.ForeignKey(PrivacyPolicy, on_delete=models.CASCADE, related_name="bounds")
    column = models.CharField(max_length=255)
    lower = models.DecimalField(max_digits=20, decimal_places=6)
    upper = models.DecimalField(max_digits=20, decimal_places=6)

    class Meta:
        ordering = ["column"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "column"], name="privacy_bound_one_per_column"),
            models.CheckConstraint(condition=Q(lower__lt=F("upper")), name="privacy_bound_lower_below_upper"),
        ]

    def __str__(self) -> str:
        return f"{self.column} in [{self.lower}, {self.upper}]"


class CategoricalColumn(models.Model):
    """A column histograms may group by, with its categories fixed by the owner: the answer's keys
    come from this list, never from the data, so a rare value cannot leak through the output."""

    policy = models.ForeignKey(PrivacyPolicy, on_delete=models.CASCADE, related_name="categoricals")
    column = models.CharField(max_length=255)
    categories = ArrayField(models.CharField(max_length=255))

    class Meta:
        ordering = ["column"]
        constraints = [models.UniqueConstraint(fields=["policy", "column"], name="privacy_categorical_one_per_column")]

    def __str__(self) -> str:
        return f"{self.column}: {', '.join(self.categories)}"


class PrivacyBudget(models.Model):
    """What an aggregate grant has spent of its epsilon (the total is `Grant.epsilon`). Every query
    locks this row (select_for_update) to check and spend, so concurrent queries cannot overspend."""

    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, related_name="privacy_budget")
    spent = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(spent__gte=0), name="privacy_spent_not_negative")]

    def __str__(self) -> str:
        return f"budget of grant #{self.grant_id}: {self.spent} spent"


class QueryKind(models.TextChoices):
    COUNT = "count", "Count"
    SUM = "sum", "Sum"
    MEAN = "mean", "Mean"
    HISTOGRAM = "histogram", "Histogram"


class QueryStatus(models.TextChoices):
    # Budget spent, the source not answered yet (or the portal died meanwhile: the budget stays spent).
    SPENT = "spent", "Budget spent, running"
    ANSWERED = "answered", "Answered"
    FAILED = "failed", "Failed (budget stays spent)"


class PrivacyQuery(models.Model):
    """One aggregate query of a grant: what was asked, the epsilon it spent and the noisy answer.
    The exact value is never stored."""

    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="privacy_queries")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=QueryKind.choices)
    column = models.CharField(max_length=255, blank=True)
    filter_column = models.CharField(max_length=255, blank=True)
    filter_value = models.CharField(max_length=255, blank=True)
    epsilon = models.DecimalField(max_digits=12, decimal_places=6)
    status = models.CharField(max_length=16, choices=QueryStatus.choices, default=QueryStatus.SPENT)
    answer = models.JSONField(null=True, blank=True, help_text="The noisy answer released to the grantee.")
    error_bound = models.JSONField(null=True, blank=True, help_text="The 95% error bound of each released number.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "privacy queries"
        indexes = [models.Index(fields=["grant", "created_at"], name="privacy_query_grant_idx")]
        constraints = [models.CheckConstraint(condition=Q(epsilon__gt=0), name="privacy_query_epsilon_positive")]

    def __str__(self) -> str:
        what = f"{self.kind}({self.column})" if self.column else self.kind
        return f"{what} on grant #{self.grant_id}, epsilon {self.epsilon}"
