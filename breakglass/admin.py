"""The workbench's break-glass pages: each classification's policy (changed through the service, so
the rule of who may and the audit hold here too) and the uses (read-only; reviews are given on the
portal's page of a use or through the API)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin

from .models import BreakGlassPolicy, BreakGlassUse
from .services.policies import break_glass_policy_set


@admin.register(BreakGlassPolicy)
class BreakGlassPolicyAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("classification", "allowed", "max_hours", "include_pii", "updated_at")
    list_select_related = ("classification",)
    fields = ("classification", "allowed", "max_hours", "include_pii")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("classification",) if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # "not allowed" is a policy too: switch it off instead

    def save_model(self, request: HttpRequest, obj: BreakGlassPolicy, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = self.call_service(
            request,
            lambda: break_glass_policy_set(
                actor=request.user,
                classification=obj.classification if change else data["classification"],
                allowed=data["allowed"],
                max_hours=data["max_hours"],
                include_pii=data["include_pii"],
            ),
        )
        if saved is not None:
            obj.pk = saved.pk


@admin.register(BreakGlassUse)
class BreakGlassUseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "dataset",
        "hours",
        "activated_at",
        "review_due_at",
        "assigned_officer",
        "outcome",
        "reviewed_by",
        "marked",
    )
    list_filter = ("outcome", ("reviewed_at", admin.EmptyFieldListFilter))
    list_select_related = ("user", "grant__dataset", "assigned_officer", "reviewed_by")
    search_fields = ("user__username", "reason", "grant__dataset__name")
    fields = (
        "marked",
        "grant_link",
        "user",
        "reason",
        "hours",
        "include_pii",
        "activated_at",
        "review_due_at",
        "assigned_officer",
        "overdue_at",
        "outcome",
        "review_note",
        "reviewed_by",
        "reviewed_at",
    )
    readonly_fields = fields

    @admin.display(description="dataset")
    def dataset(self, obj: BreakGlassUse) -> str:
        return obj.grant.dataset.qualified_name

    @admin.display(description="grant")
    def grant_link(self, obj: BreakGlassUse) -> str:
        url = reverse("admin:governance_grant_change", args=[obj.grant_id])
        return format_html('<a href="{}">Grant #{}</a>', url, obj.grant_id)

    @admin.display(description="mark")
    def marked(self, obj: BreakGlassUse) -> str:
        return format_html('<strong style="color:#b3261e">{}</strong>', "BREAK-GLASS")
