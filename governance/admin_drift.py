"""Admin for drift findings (imported by governance/admin.py, which registers everything else).

Findings are written by the reconciler only: the changelist is read-only, with no add and no delete.
Its one action starts a reconcile with repair (an operation, run by a worker) for the sources of the
selected findings.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse

from accounts.roles import administers_sources

from .admin_helpers import ReadOnlyAdminMixin
from .admin_operations import start_operations
from .models import DataSource, DriftFinding, OperationKind


class SourceWithOpenCountFilter(admin.SimpleListFilter):
    """Filter by source; each choice shows the source's number of open findings (one query)."""

    title = "source (open findings)"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rows = (
            DataSource.objects.annotate(
                n_open=Count("drift_findings", filter=Q(drift_findings__resolved_at__isnull=True))
            )
            .order_by("name")
            .values_list("pk", "name", "n_open")
        )
        return [(str(pk), f"{name} ({n_open} open)") for pk, name, n_open in rows]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(source_id=value) if value and value.isdigit() else queryset


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(DriftFinding)
class DriftFindingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What the reconciler found: missing, unexpected and expired-but-present privileges, per source."""

    list_display = ("detail", "kind", "source", "principal", "object_display", "found_at", "state", "resolved_by")
    list_filter = (SourceWithOpenCountFilter, "kind", OpenFilter, "resolution")
    list_select_related = ("source", "resolved_by")
    search_fields = ("principal", "object_schema", "object_name", "detail")
    date_hierarchy = "found_at"
    actions = ("reconcile_and_fix",)
    fields = (
        "source",
        "dataset",
        "principal",
        "object_schema",
        "object_name",
        "column",
        "privilege",
        "kind",
        "detail",
        "found_at",
        "run_id",
        "resolved_at",
        "resolved_by",
        "resolution",
    )
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="object", ordering="object_name")
    def object_display(self, obj: DriftFinding) -> str:
        if not obj.object_schema:  # a membership finding: the object is the group role
            return f"role {obj.object_name}"
        column = f" ({obj.column})" if obj.column else ""
        return f"{obj.object_schema}.{obj.object_name}{column}"

    @admin.display(description="state", ordering="resolved_at")
    def state(self, obj: DriftFinding) -> str:
        return "open" if obj.resolved_at is None else str(obj.get_resolution_display()).lower()

    def has_reconcile_permission(self, request: HttpRequest) -> bool:
        # Repairs change the targets: governance admins only (officers and auditors read findings).
        return administers_sources(request.user)

    @admin.action(description="Reconcile and fix the sources of the selected findings", permissions=["reconcile"])
    def reconcile_and_fix(self, request: HttpRequest, queryset: QuerySet[DriftFinding]) -> HttpResponse | None:
        """Start a reconcile with repair of each source in a worker and show its progress."""
        source_ids = set(queryset.order_by().values_list("source_id", flat=True).distinct())
        sources = DataSource.objects.filter(pk__in=source_ids).order_by("name")
        return start_operations(request, sources, kind=OperationKind.RECONCILE, fix=True)
