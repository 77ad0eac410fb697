"""Group mappings in the admin (Admin -> Company identity). Adding and removing go through the
mapping services, so each is checked (governance admins only) and audited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin, run_bulk

from .models import GroupMapping, ManagedGroupMembership
from .services import mappings


@admin.register(GroupMapping)
class GroupMappingAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("idp_group", "role", "portal_group", "created_at", "created_by")
    list_select_related = ("role", "portal_group", "created_by")
    search_fields = ("idp_group", "role__name")
    fields = ("idp_group", "role", "portal_group")
    actions = ("delete_mappings",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the action below deletes through the service

    def get_actions(self, request: HttpRequest) -> Any:
        return {k: v for k, v in super().get_actions(request).items() if k != "delete_selected"} | {
            "delete_mappings": self.get_action("delete_mappings")
        }

    def save_model(self, request: HttpRequest, obj: GroupMapping, form: Any, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        created = self.call_service(
            request,
            lambda: mappings.mapping_create(
                actor=request.user, idp_group=data["idp_group"], role=data["role"], portal_group=data["portal_group"]
            ),
        )
        obj.pk = created.pk if created else None

    @admin.action(description="Delete the selected mappings (members keep them until their next sync)")
    def delete_mappings(self, request: HttpRequest, queryset: QuerySet[GroupMapping]) -> None:
        run_bulk(
            request,
            queryset,
            lambda m: mappings.mapping_delete(actor=request.user, mapping=m),
            verb="mapping(s) deleted",
            label=str,
        )


@admin.register(ManagedGroupMembership)
class ManagedGroupMembershipAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Which portal duties a sync gave (and will take away at the next sync without the group)."""

    list_display = ("user", "group", "managed_by", "created_at")
    list_filter = ("managed_by", "group")
    list_select_related = ("user", "group")
    search_fields = ("user__username",)
