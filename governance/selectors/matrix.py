"""The permission matrix: principals down the side (access roles, or people with direct access),
datasets across the top grouped by source and schema, and in each cell the level in force with
markers for pending requests, grants expiring soon and open drift findings.

It is read in a fixed number of queries whatever the page holds: one page of datasets (with the
filtered total as a window count), one page of principals (likewise), and one UNION ALL of the
cell facts (grants in force, pending requests with whether this user may decide them, open drift
findings mapped to principals through SourcePrincipal). The admin and the portal render the same
object; only the admin offers actions. Pinned by tests/portal/test_matrix.py, timed by
bench/bench_matrix.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.db.models import (
    BooleanField,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Value,
    Window,
)
from django.utils import timezone

from accounts.roles import sees_everything

from ..models import AccessRequest, ApprovalStage, DriftFinding, Grant, GrantStatus, RequestState, Role, SourcePrincipal
from ..models.catalog import Dataset
from .catalog import datasets_approvable_by
from .requests import access_requests_awaiting

LEVEL_ORDER = {"read": 1, "write": 2, "admin": 3}
EXPIRING_WITHIN = dt.timedelta(days=7)
DATASETS_PER_PAGE = 40
PRINCIPALS_PER_PAGE = 50
MAX_PER_PAGE = 100

Rows = Literal["roles", "people"]


@dataclass(frozen=True)
class MatrixFilters:
    source: str = ""
    classification: str = ""
    dataset: str = ""  # free text on schema.name
    principal: str = ""  # free text on the role's name or the person's username
    rows: Rows = "roles"
    page: int = 1
    principal_page: int = 1
    per_page: int = DATASETS_PER_PAGE


@dataclass
class GrantFact:
    id: int
    level: str
    ends_at: dt.datetime
    status: str


@dataclass
class PendingFact:
    id: int
    level: str
    stage: str
    requester: str
    submitted_at: dt.datetime
    may_decide: bool

    @property
    def stage_label(self) -> str:
        return ApprovalStage(self.stage).label if self.stage in ApprovalStage.values else self.stage


@dataclass
class DriftFact:
    id: int
    kind: str
    detail: str


@dataclass
class Cell:
    grants: list[GrantFact] = field(default_factory=list)
    pending: list[PendingFact] = field(default_factory=list)
    drift: list[DriftFact] = field(default_factory=list)
    expiring: bool = False

    @property
    def level(self) -> str:
        if not self.grants:
            return "none"
        return max(self.grants, key=lambda g: LEVEL_ORDER.get(g.level, 0)).level

    @property
    def empty(self) -> bool:
        return not (self.grants or self.pending or self.drift)

    @property
    def soonest_end(self) -> dt.datetime | None:
        return min((g.ends_at for g in self.grants), default=None)


@dataclass
class Column:
    id: int
    source: str
    schema: str
    name: str
    classification: str
    rank: int


@dataclass
class Row:
    id: int
    label: str
    detail: str
    cells: list[tuple[Column, Cell]]


@dataclass
class Paging:
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.per_page)

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


@dataclass
class Matrix:
    filters: MatrixFilters
    columns: list[Column]
    groups: list[tuple[str, str, int]]  # (source, schema, how many columns)
    rows: list[Row]
    datasets: Paging
    principals: Paging
    counts: dict[str, int]  # pending, expiring, drift cells on this page

    @property
    def empty(self) -> bool:
        return not self.columns or not self.rows


def datasets_in_matrix_of(user: Any) -> Any:
    """Officers, governance admins and auditors see every dataset; owners (and stewards with the
    approval right) see theirs."""
    qs = Dataset.objects.filter(is_present=True)
    if sees_everything(user):
        return qs
    return qs.filter(pk__in=datasets_approvable_by(user).values("pk"))


def may_view_matrix(user: Any) -> bool:
    return bool(user.is_authenticated) and (sees_everything(user) or datasets_approvable_by(user).exists())


def _datasets(user: Any, f: MatrixFilters, offset: int) -> list[dict[str, Any]]:
    qs = datasets_in_matrix_of(user)
    if f.source:
        qs = qs.filter(source__name=f.source)
    if f.classification:
        qs = qs.filter(classification__slug=f.classification)
    if f.dataset:
        text = f.dataset.strip()
        schema, _, name = text.rpartition(".")
        qs = qs.filter(Q(schema__icontains=schema, name__icontains=name) if schema else Q(name__icontains=text))
    return list(
        qs.annotate(total=Window(Count("*")))
        .order_by("source__name", "schema", "name", "pk")
        .values("pk", "schema", "name", "source__name", "classification__name", "classification__rank", "total")[
            offset : offset + f.per_page
        ]
    )


def _principals(f: MatrixFilters, offset: int, dataset_scope: Any) -> list[dict[str, Any]]:
    if f.rows == "people":
        now = timezone.now()
        # People with a grant in force, a pending request, or open drift (a privilege left behind
        # after a revoke is typically held by someone with neither) on the datasets in scope.
        drifted = DriftFinding.objects.open().filter(
            dataset__in=dataset_scope,
            principal__in=SourcePrincipal.objects.filter(user=OuterRef(OuterRef("pk"))).values("db_role"),
        )
        users = get_user_model().objects.filter(
            Exists(Grant.objects.active(now).filter(grantee_user=OuterRef("pk"), dataset__in=dataset_scope))
            | Exists(
                AccessRequest.objects.filter(
                    grantee_user=OuterRef("pk"), state=RequestState.PENDING, dataset__in=dataset_scope
                )
            )
            | Exists(drifted)
        )
        if f.principal:
            users = users.filter(username__icontains=f.principal.strip())
        return [
            {
                "pk": u["pk"],
                "label": u["username"],
                "detail": " ".join([u["first_name"], u["last_name"]]).strip(),
                "total": u["total"],
            }
            for u in users.annotate(total=Window(Count("*")))
            .order_by("username", "pk")
            .values("pk", "username", "first_name", "last_name", "total")[offset : offset + PRINCIPALS_PER_PAGE]
        ]
    roles = Role.objects.all()
    if f.principal:
        roles = roles.filter(name__icontains=f.principal.strip())
    return [
        {"pk": r["pk"], "label": r["name"], "detail": r["kind"], "total": r["total"]}
        for r in roles.annotate(total=Window(Count("*")))
        .order_by("name", "pk")
        .values("pk", "name", "kind", "total")[offset : offset + PRINCIPALS_PER_PAGE]
    ]


def _facts(user: Any, rows: Rows, principal_ids: list[int], dataset_ids: list[int], now: dt.datetime) -> Any:
    """One query: grants in force, pending requests and open drift of the page's cells."""
    who = "grantee_role_id" if rows == "roles" else "grantee_user_id"
    text, integer, flag = CharField(), IntegerField(), BooleanField()
    grants = (
        Grant.objects.active(now)
        .exclude(status=GrantStatus.FAILED)  # never applied: not access anyone holds
        .filter(**{f"{who}__in": principal_ids, "dataset_id__in": dataset_ids})
        .annotate(k=Value("g", output_field=text), p=F(who), who_=Value("", output_field=text))
        .annotate(decide=Value(False, output_field=flag))
        .values_list("k", "p", "dataset_id", "pk", "level", "ends_at", "status", "who_", "decide")
    )
    awaiting = access_requests_awaiting(user).filter(pk=OuterRef("pk"))
    pending = (
        AccessRequest.objects.filter(
            state=RequestState.PENDING, **{f"{who}__in": principal_ids, "dataset_id__in": dataset_ids}
        )
        .annotate(k=Value("p", output_field=text), p=F(who), decide=Exists(awaiting))
        .values_list(
            "k", "p", "dataset_id", "pk", "level", "submitted_at", "current_stage", "requester__username", "decide"
        )
    )
    principal_of = SourcePrincipal.objects.filter(source_id=OuterRef("source_id"), db_role=OuterRef("principal"))
    principal_of = (
        principal_of.filter(role__isnull=False) if rows == "roles" else principal_of.filter(user__isnull=False)
    )
    column = "role_id" if rows == "roles" else "user_id"
    drift = (
        DriftFinding.objects.open()
        .filter(dataset_id__in=dataset_ids)
        .annotate(
            k=Value("d", output_field=text),
            p=Subquery(principal_of.values(column)[:1], output_field=integer),
            decide=Value(False, output_field=flag),
        )
        .filter(p__in=principal_ids)
        .values_list("k", "p", "dataset_id", "pk", "privilege", "found_at", "kind", "detail", "decide")
    )
    return grants.union(pending, drift, all=True)


def permission_matrix(user: Any, filters: MatrixFilters, *, now: dt.datetime | None = None) -> Matrix:
    now = now or timezone.now()
    f = filters
    per_page = max(1, min(f.per_page, MAX_PER_PAGE))
    f = MatrixFilters(
        **{**f.__dict__, "per_page": per_page, "page": max(1, f.page), "principal_page": max(1, f.principal_page)}
    )
    datasets = _datasets(user, f, (f.page - 1) * per_page)
    if not datasets and f.page > 1:  # past the end: show the first page rather than nothing
        f = MatrixFilters(**{**f.__dict__, "page": 1})
        datasets = _datasets(user, f, 0)
    scope = datasets_in_matrix_of(user).filter(pk__in=[d["pk"] for d in datasets])
    principals = _principals(f, (f.principal_page - 1) * PRINCIPALS_PER_PAGE, scope)
    if not principals and f.principal_page > 1:
        f = MatrixFilters(**{**f.__dict__, "principal_page": 1})
        principals = _principals(f, 0, scope)
    columns = [
        Column(
            id=d["pk"],
            source=d["source__name"],
            schema=d["schema"],
            name=d["name"],
            classification=d["classification__name"],
            rank=d["classification__rank"],
        )
        for d in datasets
    ]
    cells: dict[tuple[int, int], Cell] = {}
    counts = {"pending": 0, "expiring": 0, "drift": 0}
    if columns and principals:
        soon = now + EXPIRING_WITHIN
        for kind, principal, dataset_id, pk, level, at, status, who, decide in _facts(
            user, f.rows, [p["pk"] for p in principals], [c.id for c in columns], now
        ):
            cell = cells.setdefault((principal, dataset_id), Cell())
            if kind == "g":
                cell.grants.append(GrantFact(id=pk, level=level, ends_at=at, status=status))
                cell.expiring = cell.expiring or at <= soon
            elif kind == "p":
                cell.pending.append(
                    PendingFact(id=pk, level=level, stage=status, requester=who, submitted_at=at, may_decide=decide)
                )
            else:
                cell.drift.append(DriftFact(id=pk, kind=status, detail=who))
        for cell in cells.values():
            counts["pending"] += bool(cell.pending)
            counts["expiring"] += cell.expiring
            counts["drift"] += bool(cell.drift)
    empty = Cell()
    rows = [
        Row(
            id=p["pk"],
            label=p["label"],
            detail=p["detail"],
            cells=[(c, cells.get((p["pk"], c.id), empty)) for c in columns],
        )
        for p in principals
    ]
    groups: list[tuple[str, str, int]] = []
    for c in columns:
        if groups and groups[-1][:2] == (c.source, c.schema):
            groups[-1] = (c.source, c.schema, groups[-1][2] + 1)
        else:
            groups.append((c.source, c.schema, 1))
    return Matrix(
        filters=f,
        columns=columns,
        groups=groups,
        rows=rows,
        datasets=Paging(f.page, per_page, datasets[0]["total"] if datasets else 0),
        principals=Paging(f.principal_page, PRINCIPALS_PER_PAGE, principals[0]["total"] if principals else 0),
        counts=counts,
    )
