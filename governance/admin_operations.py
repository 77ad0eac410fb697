"""Admin for long operations (imported by governance/admin.py, which registers everything else).

The *Sync catalog* action of data sources and the *Reconcile and fix* action of drift findings start
operations (`start_operations`) and answer at once, redirecting to the operation's page: a progress
bar that the page's fragment refreshes (HTMX, every second) until the worker has finished, then the
result. Operations are written by their service only: the pages are read-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .admin_helpers import ReadOnlyAdminMixin
from .errors import DomainError
from .models import DataSource, Operation
from .services.operations import operation_start

# How often an unfinished operation's page asks for its progress fragment.
POLL_EVERY = "1s"


def start_operations(
    request: HttpRequest, sources: Iterable[DataSource], *, kind: str, fix: bool = False
) -> HttpResponse | None:
    """Start `kind` on each source; refusals become error messages. Redirect to the operation's
    page (one) or to the list of those started (several); None (the changelist again) if none."""
    started: list[Operation] = []
    for source in sources:
        try:
            started.append(operation_start(kind=kind, source=source, actor=request.user, fix=fix))
        except DomainError as exc:
            messages.error(request, f"{source.name}: {exc.message}")
    if not started:
        return None
    if len(started) == 1:
        return HttpResponseRedirect(reverse("admin:governance_operation_change", args=[started[0].pk]))
    messages.info(request, f"{len(started)} operations started.")
    ids = ",".join(str(operation.pk) for operation in started)
    return HttpResponseRedirect(reverse("admin:governance_operation_changelist") + f"?id__in={ids}")


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Catalog syncs and reconciles started in the admin or the API: state, progress, result."""

    list_display = ("__str__", "state", "progress", "started_by", "created_at", "finished_at")
    list_filter = ("kind", "state")
    list_select_related = ("source", "started_by")
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="progress")
    def progress(self, obj: Operation) -> str:
        if obj.finished:
            return obj.summary[:120] if obj.state == "succeeded" else obj.error[:120]
        if obj.total:
            return f"{obj.stage}: {obj.done} of {obj.total}"
        return obj.stage or obj.get_state_display()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Operation]:
        return super().get_queryset(request).select_related("source", "started_by")

    def get_urls(self) -> list[Any]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_progress"
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name=name),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, object_id: Any) -> dict[str, Any]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        operation = get_object_or_404(self.get_queryset(request), pk=object_id)
        return {
            "operation": operation,
            "progress_url": reverse("admin:governance_operation_progress", args=[operation.pk]),
            "poll_every": POLL_EVERY,
        }

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The operation's page: what was asked, by whom, and the live progress fragment."""
        if not str(object_id).isdigit():
            return HttpResponseRedirect(reverse("admin:governance_operation_changelist"))
        context = {
            **self.admin_site.each_context(request),
            **self._context(request, object_id),
            "opts": self.opts,
        }
        context["title"] = str(context["operation"])
        return TemplateResponse(request, "admin/governance/operation/detail.html", context)

    def progress_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The fragment the page polls: the bar while queued or running, the result once finished
        (without the polling attribute, so that the polling stops)."""
        return TemplateResponse(request, "admin/governance/operation/_progress.html", self._context(request, object_id))
