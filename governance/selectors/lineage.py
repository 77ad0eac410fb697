"""Reads of lineage for the pages and the API: what a dataset reads and what reads it.

Catalog metadata is visible to every signed-in user (governance.selectors.catalog), and lineage is
catalog metadata: who may *access* the data is what grants decide.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform

from ..models import Classification, Dataset, DatasetDependency, Grant


@dataclass(frozen=True)
class Neighbour:
    id: int
    label: str  # schema.name as PostgreSQL prints it
    classification: str
    rank: int
    via: str = ""  # the function that reads it, when it is not named by the view's query
    is_present: bool = True


@dataclass(frozen=True)
class DatasetLineage:
    upstream: list[Neighbour]
    downstream: list[Neighbour]


def _neighbour(dataset: Dataset, via: str = "") -> Neighbour:
    return Neighbour(
        id=dataset.pk,
        label=dataset.qualified_name,
        classification=dataset.classification.name,
        rank=dataset.classification.rank,
        via=via,
        is_present=dataset.is_present,
    )


def dataset_lineage(dataset: Dataset) -> DatasetLineage:
    """Direct neighbours only (two queries); each neighbour's page shows the next level."""
    up = (
        DatasetDependency.objects.filter(dataset=dataset)
        .select_related("upstream__classification")
        .order_by("upstream__schema", "upstream__name")
    )
    down = (
        DatasetDependency.objects.filter(upstream=dataset)
        .select_related("dataset__classification")
        .order_by("dataset__schema", "dataset__name")
    )
    return DatasetLineage(
        upstream=[_neighbour(d.upstream, d.via) for d in up],
        downstream=[_neighbour(d.dataset) for d in down],
    )


def grants_approved_under_weaker_policy() -> QuerySet[Grant]:
    """Grants in force whose request was approved under a classification ranked below what their
    dataset's effective classification is today (a view that now reads stricter data, a table
    reclassified upward): approved under rules that no longer hold, for operators to review.

    The request snapshotted its policy's classification by name; a classification renamed since
    is not matched (its grants are not listed)."""
    approved_rank = Classification.objects.filter(name=OuterRef("approved_under")).values("rank")[:1]
    return (
        Grant.objects.active()
        .annotate(approved_under=KeyTextTransform("classification", "source_request__policy"))
        .annotate(approved_rank=Subquery(approved_rank))
        .filter(approved_rank__lt=F("dataset__classification__rank"))
    )
