"""From the catalog to the engine: per source, which datasets can hold a subject's rows and how they
match (confirmed identifiers, relationships), and what each dataset's handling asks for."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from governance.models import ColumnTag, Dataset, DatasetKind, DataSource, SourceKind, TagStatus

from ..engine import matching
from ..models import DatasetHandling, HandlingAction, IdentifierKind, Relationship, SubjectIdentifier

# The tables a request reads and changes: views compute from them (a view's rows go with its tables).
TABLE_KINDS = (DatasetKind.TABLE, DatasetKind.PARTITIONED_TABLE)
# Anonymising NULLs these identifier kinds too (customer and user ids are keys, not contact data).
ANONYMISED_KINDS = (IdentifierKind.EMAIL, IdentifierKind.PHONE, IdentifierKind.NATIONAL_ID)


@dataclass
class DatasetPlan:
    dataset: Dataset
    match: matching.Match
    action: str = HandlingAction.ERASE
    legal_basis: str = ""
    reason: str = ""

    @property
    def table(self) -> matching.Table:
        return (self.dataset.schema, self.dataset.name)


@dataclass
class SourcePlan:
    source: DataSource
    graph: matching.Graph
    datasets: list[DatasetPlan] = field(default_factory=list)


def _graph(source: DataSource) -> tuple[matching.Graph, dict[matching.Table, Dataset]]:
    datasets = {
        (d.schema, d.name): d
        for d in Dataset.objects.filter(source=source, is_present=True, kind__in=TABLE_KINDS).select_related(
            "source", "owner"
        )
    }
    graph = matching.Graph()
    for ident in SubjectIdentifier.objects.filter(
        column__dataset__in=datasets.values(), column__is_present=True, status=TagStatus.CONFIRMED
    ).select_related("column__dataset"):
        table = (ident.column.dataset.schema, ident.column.dataset.name)
        graph.identifiers.setdefault(table, []).append(matching.Identifier(ident.column.name, ident.kind))
    for rel in Relationship.objects.filter(
        dataset__in=datasets.values(), referenced__in=datasets.values()
    ).select_related("dataset", "referenced"):
        graph.links.append(
            matching.Link(
                (rel.dataset.schema, rel.dataset.name),
                tuple(rel.columns),
                (rel.referenced.schema, rel.referenced.name),
                tuple(rel.referenced_columns),
            )
        )
    return graph, datasets


def source_plans(values: dict[str, str]) -> list[SourcePlan]:
    """Every PostgreSQL source with at least one dataset that can hold the subject's rows."""
    plans: list[SourcePlan] = []
    sources = DataSource.objects.filter(kind=SourceKind.POSTGRESQL).order_by("name")
    for source in sources:
        graph, datasets = _graph(source)
        if not graph.identifiers:
            continue
        handling = {h.dataset_id: h for h in DatasetHandling.objects.filter(dataset__in=datasets.values())}
        plan = SourcePlan(source=source, graph=graph)
        for table in matching.children_first(sorted(datasets), graph.links):
            found = matching.match(table, graph, values)
            if found is None:
                continue
            dataset = datasets[table]
            h = handling.get(dataset.pk)
            plan.datasets.append(
                DatasetPlan(
                    dataset=dataset,
                    match=found,
                    action=h.action if h else HandlingAction.ERASE,
                    legal_basis=h.legal_basis if h else "",
                    reason=h.reason if h else "",
                )
            )
        if plan.datasets:
            plans.append(plan)
    return plans


def anonymised_columns(datasets: list[Dataset]) -> dict[int, tuple[str, ...]]:
    """Per dataset, the nullable present columns an anonymisation sets to NULL: every PII tag not
    rejected, and confirmed contact identifiers."""
    out: dict[int, set[str]] = defaultdict(set)
    tagged = ColumnTag.objects.filter(
        column__dataset__in=datasets, column__is_present=True, column__is_nullable=True
    ).exclude(status=TagStatus.REJECTED)
    for dataset_id, name in tagged.values_list("column__dataset_id", "column__name"):
        out[dataset_id].add(name)
    identifiers = SubjectIdentifier.objects.filter(
        column__dataset__in=datasets,
        column__is_present=True,
        column__is_nullable=True,
        status=TagStatus.CONFIRMED,
        kind__in=ANONYMISED_KINDS,
    )
    for dataset_id, name in identifiers.values_list("column__dataset_id", "column__name"):
        out[dataset_id].add(name)
    return {k: tuple(sorted(v)) for k, v in out.items()}
