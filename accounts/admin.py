from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from . import services
from .models import Team, TeamMembership, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_service_account", "is_active")
    list_filter = ("is_staff", "is_superuser", "is_active", "is_service_account", "groups")
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("Portal", {"fields": ("is_service_account",)}),
    )

    # Who may approve what hangs on these fields: only superusers change them, so a governance admin
    # cannot make themselves (or a friend) a security officer or a superuser.
    PRIVILEGE_FIELDS = ("is_superuser", "is_staff", "groups", "user_permissions")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += [f for f in self.PRIVILEGE_FIELDS if f not in readonly]
        return readonly

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Groups are saved here too (save_related is then a no-op for them), so the audit event
        # sees the final group list.
        services.user_save_from_admin(actor=request.user, form=form, change=change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # Setting someone else's password is impersonation (of an approver, say): superusers only.
        if not request.user.is_superuser and str(request.user.pk) != str(id):
            raise PermissionDenied("Only superusers can set another person's password.")
        # Django's password view saves the user itself; wrap it so the change and its event commit together.
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:
                services.user_password_changed(actor=request.user, user_id=int(id))
        return response

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # People are deactivated, not deleted: requests, approvals and grants point at them.
        return False


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (TeamMembershipInline,)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.team_save_from_admin(actor=request.user, form=form, change=change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        services.team_members_save_from_admin(actor=request.user, team=form.instance, formset=formset)


# Portal groups and their permissions are defined in code (accounts/roles.py) and re-applied after
# every migrate; membership is edited on the user page, where it is audited. Editing groups here
# would change who may approve without an audit event.
admin.site.unregister(Group)
