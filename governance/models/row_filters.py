"""Row filters: named predicates an owner defines on a dataset, compiled to row-level security.

See docs/privacy.md "Row filters". The expression is kept as the owner wrote it (to show) and as
the parsed tree (`tree`, from `governance.provisioners.pg_row_filters.parse`), which is what is
rendered and provisioned: the owner's text never reaches a target.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from .catalog import Dataset


def snapshot_text(snapshot: dict[str, Any]) -> str:
    """A request's (or grant's) row filter snapshot in words, for approvers: the filter's name and
    text, the grantee's values and the predicate that will be created."""
    if not snapshot:
        return ""
    values = ", ".join(f"grantee.{k} = {v!r}" for k, v in sorted((snapshot.get("values") or {}).items()))
    text = f"{snapshot['name']}: {snapshot['expression']}"
    return text + (f" with {values}" if values else "") + f"; compiled: {snapshot['compiled']}"


class RowFilter(models.Model):
    """A named filter of a dataset, e.g. "EU only": ``region = 'EU'``. Editing it does not change
    grants already made: each grant keeps a snapshot of the filter with the grantee's values."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="row_filters")
    name = models.CharField(max_length=100)
    expression = models.TextField(help_text="e.g. region IN ('EU','UK') AND active, or tenant_id = grantee.tenant")
    tree = models.JSONField(editable=False, help_text="The parsed expression (what is compiled).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["dataset_id", "name"]
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="row_filter_unique_name")]

    def __str__(self) -> str:
        return f"{self.name}: {self.expression}"


class GranteeAttributes(models.Model):
    """The attributes a row filter may use as ``grantee.<name>`` (e.g. ``tenant``): a plain map of
    strings per user, set by a governance admin (or an identity sync). Kept apart from the identity
    models on purpose: the portal decides which values grant rows, not whatever a provider sends."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grantee_attributes")
    values = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "grantee attributes"

    def __str__(self) -> str:
        return f"attributes of {self.user}"
