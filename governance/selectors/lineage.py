"""Reads of lineage for the pages and the API: what a dataset reads and what reads it.

Catalog metadata is visible to every signed-in user (governance.selectors.catalog), and lineage is
catalog metadata: who may *access* the data is what grants decide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection
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


# Everything downstream of the given datasets (views of views...), themselves included. UNION (not
# UNION ALL) stops at rows already found, so even a cycle (which PostgreSQL cannot create) ends.
_DOWNSTREAM_SQL = """
WITH RECURSIVE down(id) AS (
    SELECT unnest(%s::bigint[])
    UNION
    SELECT d.dataset_id FROM governance_datasetdependency d JOIN down ON d.upstream_id = down.id
)
SELECT id FROM down
"""


def downstream_of(dataset_ids: Iterable[int]) -> set[int]:
    """The datasets downstream of `dataset_ids` (views of views...), themselves included."""
    ids = sorted(set(dataset_ids))
    if not ids:
        return set()
    with connection.cursor() as cur:
        cur.execute(_DOWNSTREAM_SQL, [ids])
        return {int(row[0]) for row in cur.fetchall()}


def order_upstream_first(ids: set[int], upstream: dict[int, set[int]]) -> list[int]:
    """Upstream before downstream (Kahn); anything left in a cycle comes last, in id order."""
    indegree = {i: len(upstream.get(i, set()) & ids) for i in ids}
    downstream: dict[int, list[int]] = defaultdict(list)
    for node in ids:
        for up in upstream.get(node, set()) & ids:
            downstream[up].append(node)
    ready = sorted(i for i, n in indegree.items() if n == 0)
    order: list[int] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for child in downstream[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    placed = set(order)
    return order + sorted(ids - placed)
