"""The lineage half of a catalog sync: read what views read (network), then store it (portal).

1. `read_lineage()` runs inside `read_source()`'s connection: every view's dependencies in one query,
   the relations those views read that the sync did not catalogue (outside `include_schemas`: a view
   is judged by what it reads, so what it reads is catalogued too, until nothing new is found), the
   functions views call and every SECURITY DEFINER function, and the view definitions, traced column
   by column by `catalog.lineage`.
2. `apply_lineage()` runs inside `apply_snapshot()`'s transaction and writes only what differs:
   DatasetDependency and ColumnDerivation edges, each view's lineage status and notes, and every
   dataset's SECURITY DEFINER risks. The effective classification and inherited tags that follow
   from the edges are computed afterwards by `governance.services.lineage.lineage_refresh`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import connection as PgConnection

from governance.models import Column, ColumnDerivation, Dataset, DatasetDependency, DatasetKind

from . import introspect, lineage_analysis
from .introspect import RelationInfo
from .lineage import ALL_COLUMNS
from .lineage_analysis import LineageSnapshot

VIEW_KINDS = (DatasetKind.VIEW.value, DatasetKind.MATERIALIZED_VIEW.value)
# Bounds for a pathological catalog (views of views of views...): each round reads one more level.
MAX_ROUNDS = 32


class _Functions:
    """The functions lineage needs, read on demand from the target with everything they call."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn
        self.infos: dict[int, introspect.FunctionInfo] = {}
        self.calls: dict[int, set[int]] = {}
        self._relations: list[tuple[str, str]] | None = None
        self._names: list[tuple[int, str, str]] | None = None
        self._definers_read = False

    def ensure(self, oids: set[int]) -> None:
        """Read `oids` and, until none is new, what they call (exactly, or by name in the body);
        the first call also reads every SECURITY DEFINER function."""
        pending = set(oids) - set(self.infos)
        for _ in range(MAX_ROUNDS):
            if not pending and self._definers_read:
                return
            found = introspect.read_functions(self.conn, sorted(pending), definers=not self._definers_read)
            self._definers_read = True
            new = {oid: info for oid, info in found.items() if oid not in self.infos}
            self.infos.update(new)
            pending = set()
            for oid, info in new.items():
                callees = set(info.calls)
                if info.body:
                    callees |= lineage_analysis.mentioned_functions(info.body, self.names())
                callees.discard(oid)
                self.calls[oid] = callees
                pending |= callees - set(self.infos)

    def names(self) -> list[tuple[int, str, str]]:
        if self._names is None:
            self._names = introspect.read_function_names(self.conn)
        return self._names

    def relations(self) -> list[tuple[str, str]]:
        if self._relations is None:
            self._relations = introspect.read_relation_keys(self.conn)
        return self._relations

    def reads(self) -> dict[int, lineage_analysis.FunctionReads]:
        """What each function reads, with what the functions it calls read."""
        own = {
            oid: lineage_analysis.function_reads(
                signature=info.signature,
                owner=info.owner,
                security_definer=info.security_definer,
                public_execute=info.public_execute,
                body=info.body,
                depends_on=info.depends_on,
                known=self.relations() if info.body else [],
            )
            for oid, info in self.infos.items()
        }
        return lineage_analysis.with_callees(own, self.calls)


def read_lineage(conn: PgConnection, relations: list[RelationInfo]) -> tuple[LineageSnapshot, list[RelationInfo]]:
    """Lineage of every view among `relations`, and the relations they read that were not among them
    (returned to be catalogued with the rest)."""
    deps = introspect.read_dependencies(conn)
    by_key = {r.key: r for r in relations}
    pulled: list[RelationInfo] = []
    functions = _Functions(conn)
    frontier = [r.key for r in relations if r.kind in VIEW_KINDS]
    for _ in range(MAX_ROUNDS):
        functions.ensure({oid for view in frontier for oid in deps.calls.get(view, set())})
        reads = functions.reads()
        missing: set[tuple[str, str]] = set()
        for view in frontier:
            missing |= set(deps.reads.get(view, {}))
            for oid in deps.calls.get(view, set()):
                if oid in reads:
                    missing |= set(reads[oid].reads)
        missing -= set(by_key)
        if not missing:
            break
        found = introspect.read_relations(conn, only=sorted(missing))
        for rel in found:
            by_key[rel.key] = rel
            pulled.append(rel)
        frontier = [r.key for r in found if r.kind in VIEW_KINDS]
        if not frontier:
            break  # what the last round pulled in reads nothing further
    views = {key: [c.name for c in rel.columns] for key, rel in by_key.items() if rel.kind in VIEW_KINDS}
    definitions = introspect.read_view_definitions(conn, sorted(views))
    snapshot = lineage_analysis.analyse(
        views=views, reads=deps.reads, calls=deps.calls, definitions=definitions, functions=functions.reads()
    )
    return snapshot, pulled


@dataclass
class LineageChanges:
    dependencies: int = 0
    derivations: int = 0
    datasets: int = 0


def apply_lineage(snapshot: LineageSnapshot, by_key: Mapping[tuple[str, str], Dataset]) -> LineageChanges:
    """Store the snapshot's lineage for the datasets of `by_key` (all present datasets the sync saw),
    writing only differences. Call inside the sync's transaction."""
    changes = LineageChanges()
    ids = {d.pk for d in by_key.values()}
    key_of = {d.pk: key for key, d in by_key.items()}

    # Dataset level: view -> upstream.
    wanted_deps: dict[tuple[int, int], str] = {}
    for view_key, upstream in snapshot.upstream.items():
        view = by_key.get(view_key)
        if view is None:
            continue
        for up_key, via in upstream.items():
            up = by_key.get(up_key)
            if up is not None and up.pk != view.pk:
                wanted_deps[(view.pk, up.pk)] = via[:300]
    have_deps = {(d.dataset_id, d.upstream_id): d for d in DatasetDependency.objects.filter(dataset_id__in=ids)}
    stale = [d.pk for pair, d in have_deps.items() if pair not in wanted_deps]
    if stale:
        DatasetDependency.objects.filter(pk__in=stale).delete()
    new = [
        DatasetDependency(dataset_id=a, upstream_id=b, via=v)
        for (a, b), v in wanted_deps.items()
        if (a, b) not in have_deps
    ]
    if new:
        DatasetDependency.objects.bulk_create(new)
    moved = [d for pair, d in have_deps.items() if pair in wanted_deps and d.via != wanted_deps[pair]]
    for dep in moved:
        dep.via = wanted_deps[(dep.dataset_id, dep.upstream_id)]
    if moved:
        DatasetDependency.objects.bulk_update(moved, ["via"])
    changes.dependencies = len(stale) + len(new) + len(moved)

    # Column level: every column of every view -> the columns it computes from.
    view_ids = [by_key[k].pk for k in snapshot.columns if k in by_key]
    view_id_set = set(view_ids)
    upstream_ids = {pk for (a, pk) in wanted_deps if a in view_id_set}
    columns_of: dict[int, dict[str, Column]] = defaultdict(dict)
    for column in Column.objects.filter(dataset_id__in=view_id_set | upstream_ids, is_present=True):
        columns_of[column.dataset_id][column.name] = column
    wanted: set[tuple[int, int]] = set()
    notes_by_column: dict[int, str] = {}
    for view_key, traced in snapshot.columns.items():
        view = by_key.get(view_key)
        if view is None:
            continue
        mine = columns_of.get(view.pk, {})
        for column_lineage in traced.columns:
            view_column = mine.get(column_lineage.name)
            if view_column is None:
                continue
            notes_by_column[view_column.pk] = "" if column_lineage.exact else column_lineage.why[:300]
            for ref in column_lineage.reads:
                up = by_key.get(ref.key)
                if up is None:
                    continue
                theirs = columns_of.get(up.pk, {})
                targets = theirs.values() if ref.column == ALL_COLUMNS else filter(None, [theirs.get(ref.column)])
                wanted |= {(view_column.pk, t.pk) for t in targets if t.pk != view_column.pk}
    # Every synced dataset, not only today's views: a view replaced by a table keeps no edges.
    have = set(ColumnDerivation.objects.filter(column__dataset_id__in=ids).values_list("column_id", "upstream_id"))
    gone = have - wanted
    if gone:
        by_column: dict[int, list[int]] = defaultdict(list)
        for column_id, upstream_id in gone:
            by_column[column_id].append(upstream_id)
        for column_id, upstream_list in by_column.items():
            ColumnDerivation.objects.filter(column_id=column_id, upstream_id__in=upstream_list).delete()
    added = wanted - have
    if added:
        ColumnDerivation.objects.bulk_create([ColumnDerivation(column_id=a, upstream_id=b) for a, b in sorted(added)])
    changes.derivations = len(gone) + len(added)
    relabelled = []
    noted = Column.objects.filter(dataset_id__in=ids).exclude(lineage_note="").exclude(pk__in=list(notes_by_column))
    for column in [*noted, *(c for vid in view_ids for c in columns_of.get(vid, {}).values())]:
        note = notes_by_column.get(column.pk, "")
        if column.lineage_note != note:
            column.lineage_note = note
            relabelled.append(column)
    if relabelled:
        Column.objects.bulk_update(relabelled, ["lineage_note"])
    changes.derivations += len(relabelled)

    # Each dataset: lineage status and notes (views), SECURITY DEFINER risks (any).
    for dataset in by_key.values():
        key = key_of[dataset.pk]
        traced_view = snapshot.columns.get(key)
        status = traced_view.status if traced_view is not None else ""
        notes = snapshot.notes.get(key, [])
        risks: list[dict[str, Any]] = snapshot.risks.get(key, [])
        fields = []
        if dataset.lineage_status != status:
            dataset.lineage_status = status
            fields.append("lineage_status")
        if dataset.lineage_notes != notes:
            dataset.lineage_notes = notes
            fields.append("lineage_notes")
        if dataset.definer_risks != risks:
            dataset.definer_risks = risks
            fields.append("definer_risks")
        if fields:
            dataset.save(update_fields=[*fields, "updated_at"])
            changes.datasets += 1
    return changes
