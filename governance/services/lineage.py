"""Policy follows the data: effective classifications and inherited sensitive-data tags from lineage.

A view (or materialized view) runs with its owner's privileges, so a grant on it is a grant on what
it reads. `lineage_refresh` makes every dataset's `classification` the strictest of its own declared
classification and of the effective classification of everything it reads (transitively: views of
views), and gives every column of a view the sensitive-data tags of the columns it computes from
(`Column.inherited_tags`, with where each came from). Requests, the policy, the plan preview, the
matrix, the API and the portal read only those effective values (docs/policy.md).

It is called inside the transaction of whatever changed the inputs, after the change: a catalog sync
(new edges), a declared classification edited, a tag confirmed or rejected. Only what differs is
written; each dataset whose effective classification or inherited tags changed gets one audit event
in that same transaction, saying why.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count

from audit import services as audit

from ..models import (
    Classification,
    Column,
    ColumnDerivation,
    ColumnTag,
    Dataset,
    DatasetDependency,
    Grant,
    TagStatus,
)
from ..selectors.lineage import downstream_of, order_upstream_first

log = logging.getLogger(__name__)


@dataclass
class RefreshResult:
    reclassified: list[int] = field(default_factory=list)  # dataset ids whose effective classification changed
    retagged: list[int] = field(default_factory=list)  # dataset ids whose columns' inherited tags changed


def lineage_lock(source_ids: Iterable[int]) -> None:
    """Serialise lineage work on a source until the transaction ends (advisory, re-entrant).

    Every transaction that will refresh lineage takes it FIRST, before any row lock: a sync (which
    rewrites the edges), a declared classification edited, a tag decided. So two of them never
    compute effective values from each other's half-committed state (a new view judged by a
    table's old classification), and never wait on each other's rows in a cycle."""
    keys = sorted({_lock_key(pk) for pk in source_ids})
    if keys:
        with connection.cursor() as cur:
            cur.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", [keys])


def _lock_key(source_id: int) -> int:
    digest = hashlib.sha256(f"lineage:{source_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lineage_refresh(
    *, source_id: int | None = None, dataset_ids: Iterable[int] = (), actor: Any = None, reason: str = ""
) -> RefreshResult:
    """Recompute the effective classification and inherited tags of `dataset_ids` and everything
    downstream of them, or of every dataset of `source_id`. Call inside the caller's transaction."""
    if source_id is not None:
        lineage_lock([source_id])
        affected = set(Dataset.objects.filter(source_id=source_id).values_list("pk", flat=True))
    else:
        dataset_ids = list(dataset_ids)
        lineage_lock(Dataset.objects.filter(pk__in=dataset_ids).values_list("source_id", flat=True))
        affected = downstream_of(dataset_ids)
    result = RefreshResult()
    if not affected:
        return result

    upstream: dict[int, set[int]] = defaultdict(set)
    for dataset_id, upstream_id in DatasetDependency.objects.filter(dataset_id__in=affected).values_list(
        "dataset_id", "upstream_id"
    ):
        upstream[dataset_id].add(upstream_id)
    involved = affected | {u for ups in upstream.values() for u in ups}
    rank = dict(Classification.objects.values_list("pk", "rank"))
    names = dict(Classification.objects.values_list("pk", "name"))
    rows = {
        pk: (declared, effective, schema, name)
        for pk, declared, effective, schema, name in Dataset.objects.filter(pk__in=involved).values_list(
            "pk", "declared_classification_id", "classification_id", "schema", "name"
        )
    }
    order = order_upstream_first(affected, upstream)

    # Dataset level: the strictest of the own declaration and of everything read.
    effective = {pk: row[1] for pk, row in rows.items()}
    because: dict[int, int] = {}  # dataset -> the upstream dataset that made it stricter
    for pk in order:
        declared = rows[pk][0]
        best, via = declared, None
        for up in sorted(upstream.get(pk, set())):
            candidate = effective.get(up)
            if candidate is not None and rank[candidate] > rank[best]:
                best, via = candidate, up
        effective[pk] = best
        if via is not None:
            because[pk] = via
    changed = [pk for pk in order if effective[pk] != rows[pk][1]]
    if changed:
        datasets = list(Dataset.objects.filter(pk__in=changed).select_related("classification"))
        rose = [d.pk for d in datasets if rank[effective[d.pk]] > rank[d.classification_id]]
        # Grants in force on a dataset whose policy just became stricter were approved under the
        # weaker rules: they are not revoked behind anyone's back, but they are counted here, listed
        # for operators (Grants -> "approved under a weaker classification") and logged.
        in_force = dict(
            Grant.objects.active()
            .filter(dataset_id__in=rose)
            .values_list("dataset_id")
            .annotate(n=Count("pk"))
            .values_list("dataset_id", "n")
        )
        for dataset in datasets:
            before = dataset.classification_id
            dataset.classification_id = effective[dataset.pk]
            dataset.save(update_fields=["classification", "updated_at"])
            why = _why(dataset.pk, because, rows, effective, names)
            audit.record(
                action="dataset.effective_classification_changed",
                actor=actor,
                target=dataset,
                changes={"classification": [before, effective[dataset.pk]]},
                reason=why + (f" ({reason})" if reason else ""),
                metadata={
                    "before": names[before],
                    "after": names[effective[dataset.pk]],
                    "declared": names[rows[dataset.pk][0]],
                    "reads": because.get(dataset.pk),
                    "grants_in_force": in_force.get(dataset.pk, 0),
                },
            )
            if in_force.get(dataset.pk):
                log.warning(
                    "%s is now %s; %s grant(s) in force were approved under %s: review them",
                    dataset.qualified_name,
                    names[effective[dataset.pk]],
                    in_force[dataset.pk],
                    names[before],
                )
        result.reclassified = sorted(changed)

    result.retagged = _refresh_columns(affected, order, actor, reason)
    return result


def _why(
    pk: int,
    because: dict[int, int],
    rows: dict[int, tuple[int, int, str, str]],
    effective: dict[int, int],
    names: dict[int, str],
) -> str:
    up = because.get(pk)
    if up is None:
        return f"Judged by its own classification ({names[rows[pk][0]]}): nothing it reads is stricter."
    return f"Reads {rows[up][2]}.{rows[up][3]}, which is {names[effective[up]]}."


def _refresh_columns(affected: set[int], order: list[int], actor: Any, reason: str) -> list[int]:
    """Inherited tags of every column of the affected datasets, upstream first."""
    derived: dict[int, set[int]] = defaultdict(set)
    for column_id, upstream_id in ColumnDerivation.objects.filter(column__dataset_id__in=affected).values_list(
        "column_id", "upstream_id"
    ):
        derived[column_id].add(upstream_id)
    # Columns to recompute: those with edges, and those still carrying tags from edges now gone.
    columns = {
        c.pk: c
        for c in Column.objects.filter(dataset_id__in=affected)
        .filter(pk__in=list(derived))
        .only("pk", "dataset_id", "name", "inherited_tags", "inherited_from")
    }
    for c in (
        Column.objects.filter(dataset_id__in=affected)
        .exclude(inherited_tags=[])
        .only("pk", "dataset_id", "name", "inherited_tags", "inherited_from")
    ):
        columns.setdefault(c.pk, c)
    if not columns:
        return []
    sources = {u for ups in derived.values() for u in ups}
    # What an upstream column carries: its own confirmed tags (origin: itself), and what it inherited
    # (recomputed in this refresh if it is itself downstream, else as stored).
    own: dict[int, dict[str, set[int]]] = defaultdict(dict)
    for column_id, tag in ColumnTag.objects.filter(column_id__in=sources, status=TagStatus.CONFIRMED).values_list(
        "column_id", "tag"
    ):
        own[column_id][tag] = {column_id}
    stored: dict[int, list[dict[str, Any]]] = {pk: c.inherited_from for pk, c in columns.items()}
    stored.update(Column.objects.filter(pk__in=sources - set(columns)).values_list("pk", "inherited_from"))
    new: dict[int, dict[str, set[int]]] = {}

    def carried(column_id: int) -> dict[str, set[int]]:
        out: dict[str, set[int]] = defaultdict(set)
        for tag, origins in own.get(column_id, {}).items():
            out[tag] |= origins
        if column_id in new:
            for tag, origins in new[column_id].items():
                out[tag] |= origins
        else:
            for entry in stored.get(column_id) or []:
                out[entry["tag"]].add(int(entry["column_id"]))
        return out

    position = {pk: i for i, pk in enumerate(order)}
    for column in sorted(columns.values(), key=lambda c: (position.get(c.dataset_id, len(order)), c.pk)):
        tags: dict[str, set[int]] = defaultdict(set)
        for up in derived.get(column.pk, set()):
            for tag, origins in carried(up).items():
                tags[tag] |= origins
        new[column.pk] = tags
    origins = {o for tags in new.values() for os in tags.values() for o in os}
    labels = {
        pk: f"{schema}.{table}.{name}"
        for pk, schema, table, name in Column.objects.filter(pk__in=origins).values_list(
            "pk", "dataset__schema", "dataset__name", "name"
        )
    }
    updated: list[Column] = []
    by_dataset: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for pk, tags in new.items():
        column = columns[pk]
        inherited_tags = sorted(tags)
        inherited_from = [
            {"tag": tag, "column": labels.get(origin, f"#{origin}"), "column_id": origin}
            for tag in inherited_tags
            for origin in sorted(tags[tag])
        ]
        if column.inherited_tags != inherited_tags or column.inherited_from != inherited_from:
            by_dataset[column.dataset_id][column.name] = inherited_tags
            column.inherited_tags = inherited_tags
            column.inherited_from = inherited_from
            updated.append(column)
    if updated:
        Column.objects.bulk_update(updated, ["inherited_tags", "inherited_from"])
        for dataset in Dataset.objects.filter(pk__in=by_dataset).select_related("source"):
            audit.record(
                action="dataset.inherited_tags_changed",
                actor=actor,
                target=dataset,
                reason="Columns compute from columns with sensitive-data tags (lineage)."
                + (f" ({reason})" if reason else ""),
                metadata={"columns": by_dataset[dataset.pk]},
            )
    return sorted(by_dataset)
