"""Admin for data source health and the jobs waiting on it (imported by governance/admin.py).

Read-only: health rows are written by the engine only (a job that gets no answer, the prober, a
job that succeeds). Officers, governance admins and auditors see the page through their groups' view
permission, like the other operators' pages (accounts/roles.py); nobody adds, changes or deletes a
row here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from .admin_helpers import ReadOnlyAdminMixin
from .models import JobStatus, SourceHealth
from .selectors.health import waiting_jobs_count


@admin.register(SourceHealth)
class SourceHealthAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Whether each data source answers the workers; unreachable ones first."""

    list_display = ("source", "state", "since", "waiting_jobs", "failed_probes", "last_probe_at", "short_error")
    list_filter = ("reachable",)
    list_select_related = ("source",)
    search_fields = ("source__name", "last_error")
    ordering = ("reachable", "-since")
    fields = (
        "source",
        "reachable",
        "since",
        "last_error",
        "last_failure_at",
        "last_probe_at",
        "failed_probes",
        "next_probe_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SourceHealth]:
        return super().get_queryset(request).annotate(n_waiting=waiting_jobs_count())

    @admin.display(description="state", ordering="reachable")
    def state(self, obj: SourceHealth) -> str:
        return "reachable" if obj.reachable else "UNREACHABLE"

    @admin.display(description="jobs waiting", ordering="n_waiting")
    def waiting_jobs(self, obj: Any) -> int:
        return int(obj.n_waiting)

    @admin.display(description="last error")
    def short_error(self, obj: SourceHealth) -> str:
        return obj.last_error[:120]


class SourceHealthFilter(admin.SimpleListFilter):
    """For the Data sources list: reachable (or never unreachable) / unreachable."""

    title = "health"
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unreachable", "Unreachable"), ("reachable", "Reachable")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "unreachable":
            return queryset.filter(health__reachable=False)
        if self.value() == "reachable":
            return queryset.filter(Q(health__isnull=True) | Q(health__reachable=True))
        return queryset


def source_health_display(obj: Any) -> str:
    """The Data sources list's health column (the row comes with `health` selected)."""
    try:
        health = obj.health
    except SourceHealth.DoesNotExist:
        return "reachable"
    if health.reachable:
        return "reachable"
    return f"UNREACHABLE since {health.since:%Y-%m-%d %H:%M:%S}: {health.last_error[:80]}"


class JobWaitingFilter(admin.SimpleListFilter):
    """For the Provisioning jobs list: jobs waiting for their source, and jobs stalled (still
    retrying after PROVISIONING_MAX_ATTEMPTS)."""

    title = "waiting or stalled"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("waiting", "Waiting for their data source"),
            ("stalled", "Stalled (still retrying after the attempts limit)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        from django.conf import settings

        if self.value() == "waiting":
            return queryset.filter(waiting_since__isnull=False, status=JobStatus.QUEUED)
        if self.value() == "stalled":
            return queryset.filter(
                status__in=[JobStatus.QUEUED, JobStatus.RUNNING], attempts__gte=settings.PROVISIONING_MAX_ATTEMPTS
            )
        return queryset
