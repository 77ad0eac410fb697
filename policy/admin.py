"""Admin page of the policy app: which objects are managed in code (read-only: a document applies
them, `manage.py policy adopt|release` marks and unmarks them, audited)."""

from __future__ import annotations

from django.contrib import admin

from governance.admin_helpers import ReadOnlyAdminMixin

from .models import ManagedObject


@admin.register(ManagedObject)
class ManagedObjectAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("kind", "key", "document", "origin", "applied_at", "applied_by")
    list_filter = ("kind",)
    search_fields = ("key", "document")
    list_select_related = ("applied_by",)
