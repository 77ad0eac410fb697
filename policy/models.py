"""Which objects a policy document manages (docs/policy-as-code.md#managed-by-code)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models


class ManagedKind(models.TextChoices):
    CLASSIFICATION = "classification", "Classification"
    ROLE = "role", "Role"
    STANDING_GRANT = "standing_grant", "Standing grant"
    DATASET = "dataset", "Dataset"


class ManagedObject(models.Model):
    """An object applied from a policy document (or adopted into one): the admin, the portal and the
    API refuse to change it (governance.managed), the policy applier alone changes it. `key` is how
    the document names it (a classification's slug, a role's name, a standing grant's grantee,
    dataset and level, a dataset's `<source>:<schema>.<name>`); `spec` keeps what the document said
    that the object cannot tell (a standing grant written without an end). Releasing an object
    deletes its row (audited)."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=32, choices=ManagedKind.choices)
    key = models.CharField(max_length=1200)
    document = models.CharField(max_length=80, help_text="sha256 of the document that last applied it.")
    origin = models.CharField(max_length=200, blank=True, help_text="The file name, or `api`, or `adopted`.")
    spec = models.JSONField(default=dict, blank=True)
    applied_at = models.DateTimeField()
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kind", "key"]
        constraints = [
            models.UniqueConstraint(fields=["content_type", "object_id"], name="policy_managed_object_once"),
        ]
        indexes = [models.Index(fields=["kind", "key"], name="policy_managed_kind_key_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.key}"
