"""Admin pages of the data-subject requests app: read-only lists (the identifiers' and corrections'
values are never shown); every change goes through the services (the API, the management command)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from governance.admin_helpers import ReadOnlyAdminMixin

from .models import DatasetHandling, Relationship, RequestDataset, SubjectIdentifier, SubjectRequest


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Shown, never added, changed or deleted here."""


@admin.register(SubjectIdentifier)
class SubjectIdentifierAdmin(ReadOnly):
    list_display = ("column", "kind", "status", "evidence", "decided_by", "decided_at")
    list_filter = ("kind", "status")
    list_select_related = ("column__dataset__source", "decided_by")


@admin.register(Relationship)
class RelationshipAdmin(ReadOnly):
    list_display = ("__str__", "dataset", "origin", "constraint_name", "declared_by")
    list_filter = ("origin",)
    list_select_related = ("dataset__source", "referenced", "declared_by")


@admin.register(DatasetHandling)
class DatasetHandlingAdmin(ReadOnly):
    list_display = ("dataset", "action", "legal_basis", "reason", "set_by", "set_at")
    list_filter = ("action", "legal_basis")
    list_select_related = ("dataset__source", "set_by")


class RequestDatasetInline(admin.TabularInline):
    model = RequestDataset
    fields = (
        "dataset", "matched", "paths", "action", "legal_basis", "reason", "outcome", "rows_affected", "verified",
        "acknowledged_by", "acknowledged_at",
    )  # fmt: skip
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SubjectRequest)
class SubjectRequestAdmin(ReadOnly):
    list_display = ("__str__", "state", "reference", "created_by", "due_at", "approved_by", "finished_at")
    list_filter = ("kind", "state")
    list_select_related = ("created_by", "approved_by")
    exclude = ("identifiers_encrypted", "corrections_encrypted", "approved_digest")
    inlines = [RequestDatasetInline]
