"""Lineage: which datasets and columns a view or materialized view reads (read at sync).

PostgreSQL runs a view with its owner's privileges, so a grant on a view is a grant on what it
reads. These edges are what `governance.services.lineage` follows to judge a view by the strictest
classification and the sensitive columns of everything underneath it (docs/policy.md).
"""

from __future__ import annotations

from django.db import models

from .catalog import Column, Dataset


class DatasetDependency(models.Model):
    """`dataset` (a view or materialized view) reads `upstream`, directly or through a function."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="upstream_links")
    upstream = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="downstream_links")
    via = models.CharField(
        max_length=300, blank=True, help_text="Empty: the view's query names it; else the function that reads it."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "upstream"], name="dataset_dependency_unique"),
            models.CheckConstraint(
                condition=~models.Q(dataset=models.F("upstream")), name="dataset_dependency_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id} reads {self.upstream_id}"


class ColumnDerivation(models.Model):
    """`column` of a view computes from `upstream`: traced exactly, or, when the view could not be
    traced column by column, one edge to every column the view reads (`Column.lineage_note` says so)."""

    column = models.ForeignKey(Column, on_delete=models.CASCADE, related_name="derived_from_links")
    upstream = models.ForeignKey(Column, on_delete=models.CASCADE, related_name="feeds_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["column", "upstream"], name="column_derivation_unique"),
        ]
        indexes = [models.Index(fields=["upstream"], name="column_derivation_up_idx")]

    def __str__(self) -> str:
        return f"column {self.column_id} computes from {self.upstream_id}"
