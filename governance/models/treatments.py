"""Column treatments as policy data (issue 20): how a PII column may be granted.

A grant covers a PII column ``raw``, ``masked``, ``pseudonymised`` or ``nulled``; anything but raw is
enforced by a governed view on the target (governance/provisioners/pg_views.py). Which treatments a
classification allows for a PII kind, which one a request starts from and which extra approval stage
one needs are rows of :class:`TreatmentRule`, combined by governance.policy (the strictest wins).
"""

from __future__ import annotations

from django.db import models
from django.db.models import BooleanField, F, Func, Q, Value

from .catalog import ApprovalStage, Classification, DataSource, SensitiveTag


class Treatment(models.TextChoices):
    """In the order of what they reveal, most first (the policy's "strictest" is the last)."""

    RAW = "raw", "Raw"
    MASKED = "masked", "Masked"
    PSEUDONYMISED = "pseudonymised", "Pseudonymised"
    NULLED = "nulled", "Nulled"


TREATMENT_ORDER: list[str] = [t.value for t in Treatment]


def treated() -> Func:
    """True for a request or grant with a column treated otherwise than raw (held through a
    governed view): ``Grant.objects.filter(treated())``."""
    return Func(F("treatments"), Value('$.* ? (@ != "raw")'), function="jsonb_path_exists", output_field=BooleanField())


class TreatmentRule(models.Model):
    """One treatment a classification allows for PII columns of one kind (``tag``; blank: every kind
    without rows of its own). A classification with no rows allows every treatment, raw by default.
    ``is_default`` preselects it on the request form; ``stage`` is the approval stage a request that
    picks it needs on top of the classification's."""

    classification = models.ForeignKey(Classification, on_delete=models.CASCADE, related_name="treatment_rules")
    tag = models.CharField(
        max_length=32,
        choices=SensitiveTag.choices,
        blank=True,
        help_text="PII kind; blank: any kind without its own rules.",
    )
    treatment = models.CharField(max_length=16, choices=Treatment.choices)
    is_default = models.BooleanField(default=False, help_text="Preselected on the request form.")
    stage = models.CharField(
        max_length=32,
        choices=ApprovalStage.choices,
        blank=True,
        help_text="An extra approval stage a request that picks this treatment needs.",
    )

    class Meta:
        ordering = ["classification__rank", "tag", "treatment"]
        constraints = [
            models.UniqueConstraint(fields=["classification", "tag", "treatment"], name="treatment_rule_unique"),
            models.UniqueConstraint(
                fields=["classification", "tag"], condition=Q(is_default=True), name="treatment_rule_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.classification}: {self.tag or 'any PII'} {self.treatment}"


class GovernedSchema(models.Model):
    """Where a source's governed views live, and the source's pseudonym key (32 random bytes, hex,
    encrypted like every stored secret: governance.crypto, re-wrapped by key rotation). Made when a
    request first asks for a treated column of the source."""

    source = models.OneToOneField(DataSource, on_delete=models.CASCADE, related_name="governed_schema")
    schema = models.CharField(max_length=63, default="portal_governed", help_text="Created on the target if missing.")
    pseudonym_key_encrypted = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.source.name}: {self.schema}"
