"""The workbench's quality pages: checks (created, changed, reviewed and removed through the
services, so the owner/steward rule and the audit hold here too), datasets' quality states with a
"run now" action, and runs with their results (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin, run_bulk

from .models import (
    ColumnProfile,
    DatasetQuality,
    IntegrityFinding,
    IntegrityWatch,
    QualityCheck,
    QualityResult,
    QualityRun,
)
from .services import checks as services
from .services.integrity import integrity_finding_resolve, integrity_watch_set
from .services.runs import quality_run_request


@admin.register(QualityCheck)
class QualityCheckAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "dataset",
        "kind",
        "column",
        "threshold",
        "enabled",
        "last_status",
        "last_run_at",
        "reviewed_by",
    )
    list_filter = ("kind", "last_status", "enabled")
    list_select_related = ("dataset__source", "reviewed_by")
    search_fields = ("name", "dataset__name", "dataset__schema", "column")
    autocomplete_fields = ("dataset",)
    fields = ("dataset", *services.FIELDS)
    actions = ("review",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("dataset",) if obj is not None else ()

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        if request.GET.get("dataset", "").isdigit():
            initial["dataset"] = int(request.GET["dataset"])
        return initial

    def save_model(self, request: HttpRequest, obj: QualityCheck, form: Any, change: bool) -> None:
        data = {k: form.cleaned_data[k] for k in services.FIELDS if k in form.cleaned_data}
        if change:
            self.call_service(request, lambda: services.quality_check_update(actor=request.user, check=obj, **data))
            return
        created = self.call_service(
            request,
            lambda: services.quality_check_create(actor=request.user, dataset=form.cleaned_data["dataset"], **data),
        )
        obj.pk = created.pk if created else None

    def delete_model(self, request: HttpRequest, obj: QualityCheck) -> None:
        self.call_service(request, lambda: services.quality_check_delete(actor=request.user, check=obj))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[QualityCheck]) -> None:
        run_bulk(
            request,
            queryset,
            lambda c: services.quality_check_delete(actor=request.user, check=c),
            verb="removed",
            label=str,
        )

    @admin.action(description="Review the selected owner-written queries (you are not their author)")
    def review(self, request: HttpRequest, queryset: QuerySet[QualityCheck]) -> None:
        run_bulk(
            request,
            queryset,
            lambda c: services.quality_check_review(actor=request.user, check=c),
            verb="reviewed",
            label=str,
        )


@admin.register(DatasetQuality)
class DatasetQualityAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("dataset", "status", "failing_checks", "last_run_at", "next_run_at", "running_since")
    list_filter = ("status",)
    list_select_related = ("dataset__source",)
    search_fields = ("dataset__name", "dataset__schema")
    actions = ("run_now",)

    @admin.action(description="Run the selected datasets' checks now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[DatasetQuality]) -> None:
        run_bulk(
            request,
            queryset.select_related("dataset__source"),
            lambda s: quality_run_request(actor=request.user, dataset=s.dataset),
            verb="asked to run",
            label=str,
        )


class _RecordedInline(admin.TabularInline):
    """What a run recorded: shown, never edited."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ResultInline(_RecordedInline):
    model = QualityResult
    fields = ("check_ref", "status", "value", "threshold", "failing", "examined", "message")


class ProfileInline(_RecordedInline):
    model = ColumnProfile
    fields = ("column", "rows", "nulls", "distinct", "values_withheld")


@admin.register(QualityRun)
class QualityRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("pk", "dataset", "status", "trigger", "actor", "started_at", "duration_ms", "sample_percent")
    list_filter = ("status", "trigger")
    list_select_related = ("dataset__source", "actor")
    search_fields = ("dataset__name", "dataset__schema")
    inlines = (ResultInline, ProfileInline)


@admin.register(IntegrityWatch)
class IntegrityWatchAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("dataset", "mode", "key_column", "created_by", "created_at")
    list_filter = ("mode",)
    list_select_related = ("dataset__source", "created_by")
    autocomplete_fields = ("dataset",)
    fields = ("dataset", "mode", "key_column")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("dataset",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: IntegrityWatch, form: Any, change: bool) -> None:
        dataset = obj.dataset if change else form.cleaned_data["dataset"]
        self.call_service(
            request,
            lambda: integrity_watch_set(
                actor=request.user,
                dataset=dataset,
                mode=form.cleaned_data["mode"],
                key_column=form.cleaned_data.get("key_column", ""),
            ),
        )


@admin.register(IntegrityFinding)
class IntegrityFindingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("dataset", "found_at", "detail", "resolved_at", "resolved_by", "resolution")
    list_filter = (("resolved_at", admin.EmptyFieldListFilter),)
    list_select_related = ("dataset__source", "resolved_by")
    actions = ("accept",)

    @admin.action(description="Accept the selected changes (a planned correction)")
    def accept(self, request: HttpRequest, queryset: QuerySet[IntegrityFinding]) -> None:
        reason = f"Accepted in the workbench by {request.user}."
        run_bulk(
            request,
            queryset,
            lambda f: integrity_finding_resolve(actor=request.user, finding=f, resolution=reason),
            verb="accepted",
            label=str,
        )
