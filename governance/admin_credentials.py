"""Admin for rotations of the portal's own credential (imported by governance/admin.py), and the
DataSource action that rotates now (docs/security.md#credential-rotation).

Rotations are written by `governance.services.credentials` only: read-only here. A failed rotation
is an open finding until a later rotation of its source succeeds.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .admin_drift import OpenFilter
from .admin_helpers import ReadOnlyAdminMixin
from .errors import DomainError
from .models import CredentialRotation, DataSource, RotationStatus
from .services.credentials import datasource_credentials_rotate


@admin.register(CredentialRotation)
class CredentialRotationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("source", "status", "trigger", "actor", "started_at", "finished_at", "state", "error")
    list_filter = ("source", "status", "trigger", OpenFilter)
    list_select_related = ("source", "actor")
    fields = ("source", "status", "trigger", "actor", "started_at", "finished_at", "error", "resolved_at")
    readonly_fields = fields
    date_hierarchy = "started_at"

    @admin.display(description="finding")
    def state(self, obj: CredentialRotation) -> str:
        if obj.status != RotationStatus.FAILED:
            return "—"
        return "open" if obj.resolved_at is None else "resolved"


def rotate_credentials(model_admin: Any, request: HttpRequest, queryset: QuerySet[DataSource]) -> None:
    """Rotate the portal's password on each selected source now (a second or so per source)."""
    for source in queryset.order_by("name"):
        try:
            rotation = datasource_credentials_rotate(source=source, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"{source.name}: {exc.message}")
            continue
        if rotation.status == RotationStatus.ROTATED:
            messages.success(request, f"{source.name}: the portal's password was rotated.")
        else:
            messages.error(request, f"{source.name}: rotation failed, old password kept: {rotation.error}")


rotate_credentials.short_description = "Rotate the portal's credential now"  # type: ignore[attr-defined]
rotate_credentials.allowed_permissions = ("sync",)  # type: ignore[attr-defined]  # source administrators
