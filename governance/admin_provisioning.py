"""The workbench's provisioning pages: jobs (with the overdue revocations and the waiting jobs) and
which target role stands for whom. Registered on import by governance/admin.py."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from accounts.roles import operates_provisioning

from .admin_health import JobWaitingFilter  # registers SourceHealth
from .admin_helpers import ReadOnlyAdminMixin, run_bulk
from .models import (
    JobStatus,
    ProvisioningJob,
    SourcePrincipal,
)
from .services.engine.jobs import provisioning_job_retry
from .services.engine.sweep import overdue_revocations

# --- provisioning -----------------------------------------------------------------------------------


class OverdueRevocationFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("revocations", "Revocations overdue (access still in place)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "revocations":
            return queryset.filter(pk__in=overdue_revocations().values("pk"))
        return queryset


@admin.register(ProvisioningJob)
class ProvisioningJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every apply/revoke with its attempts, error and the SQL it ran; failed jobs can be retried."""

    list_display = ("id", "action", "state", "grant_display", "attempts", "duration_ms", "queued_at", "short_error")
    list_filter = (OverdueRevocationFilter, JobWaitingFilter, "status", "action", "grant__dataset__source")
    list_select_related = ("grant__dataset__source", "grant__grantee_user", "grant__grantee_role")
    search_fields = ("last_error", "grant__dataset__name", "grant__grantee_user__username")
    actions = ("retry_jobs",)
    readonly_fields = (
        "grant",
        "action",
        "status",
        "attempts",
        "last_error",
        "sql",
        "plan_digest",
        "queued_at",
        "started_at",
        "finished_at",
        "next_attempt_at",
        "waiting_since",
        "published_at",
        "republished_at",
        "lease_expires_at",
        "duration_ms",
    )
    fields = readonly_fields
    show_full_result_count = False

    @admin.display(description="grant or membership")
    def grant_display(self, obj: ProvisioningJob) -> str:
        g = obj.grant
        if g is None:
            return f"membership #{obj.membership_id} on source #{obj.source_id}"
        who = f"role {g.grantee_role.name}" if g.grantee_role else (g.grantee_user.username if g.grantee_user else "")
        return f"#{g.pk} {g.level} on {g.dataset.source.name}:{g.dataset.qualified_name} for {who}"

    @admin.display(description="status", ordering="status")
    def state(self, obj: ProvisioningJob) -> str:
        if obj.waiting_since is not None and obj.status == JobStatus.QUEUED:
            return f"waiting for its source since {obj.waiting_since:%Y-%m-%d %H:%M:%S}"
        return obj.get_status_display()

    @admin.display(description="error")
    def short_error(self, obj: ProvisioningJob) -> str:
        return obj.last_error[:120]

    @admin.display(description="SQL executed")
    def sql(self, obj: ProvisioningJob) -> str:
        return format_html("<pre>{}</pre>", "\n".join(obj.statements))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        # Officers and governance admins act; auditors (and owners) see the page, not the action.
        return operates_provisioning(request.user)

    @admin.action(description="Retry the selected failed jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[ProvisioningJob]) -> None:
        run_bulk(
            request,
            queryset,
            lambda j: provisioning_job_retry(job=j, actor=request.user),
            verb="job(s) queued again",
            label=lambda j: f"Job #{j.pk}",
        )


@admin.register(SourcePrincipal)
class SourcePrincipalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Which target role stands for whom. Managed rows are created by the engine."""

    list_display = ("db_role", "source", "user", "role", "managed", "created_at")
    list_filter = ("source", "managed")
    list_select_related = ("source", "user", "role")
    search_fields = ("db_role", "user__username", "role__name")
    readonly_fields = ("source", "user", "role", "db_role", "managed", "created_at")
