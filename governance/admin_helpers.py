"""Small pieces shared by the admin classes: domain errors become messages, intermediate pages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from .errors import DomainError


class ReadOnlyAdminMixin:
    """For records the engine writes and nobody edits by hand (jobs, findings, health, principals,
    decisions): the page shows them; add, change and delete are refused to everyone."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def run_service(request: HttpRequest, call: Callable[[], Any], *, success: str | None = None) -> bool:
    """Call a service; show its DomainError as an admin error message instead of a 500."""
    try:
        call()
    except DomainError as exc:
        messages.error(request, exc.message)
        return False
    if success:
        messages.success(request, success)
    return True


def run_bulk(
    request: HttpRequest, objects: Iterable[Any], call: Callable[[Any], Any], *, verb: str, label: Callable[[Any], str]
) -> None:
    """Apply a service to each selected object; one summary message plus one message per refusal."""
    done = 0
    for obj in objects:
        try:
            call(obj)
        except DomainError as exc:
            messages.error(request, f"{label(obj)}: {exc.message}")
        else:
            done += 1
    if done:
        messages.success(request, f"{done} {verb}.")


def confirmation_page(
    model_admin: Any,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    action: str,
    verb: str,
    comment_required: bool,
) -> TemplateResponse:
    """The intermediate page of a bulk action: lists the objects and asks for a comment/reason.

    It posts back to the same action with `confirm=yes`, so the action itself applies the service.
    """
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.opts,
        "objects": queryset,
        "action": action,
        "decision": verb,
        "comment_required": comment_required,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/governance/bulk_confirmation.html", context)


class ManagedInCodeAdminMixin:
    """The change page of an object managed in code (docs/policy-as-code.md#managed-by-code) says so
    at once; saving is refused by the service (governance.managed), whose message says the same."""

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        from .managed import managed_where

        if request.method == "GET":
            obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
            where = managed_where(obj) if obj is not None else None
            if where:
                messages.warning(request, where)
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


class ServiceAdminMixin:
    """For ModelAdmins whose save_model calls a service.

    A DomainError from the service must not escape save_model: it would become a 500, and the
    change view's own transaction.atomic() would roll back the `denied` audit event the service
    recorded. Instead the refusal is shown as an error message, the rest of Django's save path
    (related objects, LogEntry, "changed successfully") is skipped, and the user is sent back to
    the form. The service already rolled back its own writes (savepoint), so nothing half-written
    remains; the denied event commits with the view's transaction.
    """

    def call_service(self, request: HttpRequest, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DomainError as exc:
            request._service_refusal = exc  # type: ignore[attr-defined]
            messages.error(request, exc.message)
            return None

    @staticmethod
    def refused(request: HttpRequest) -> bool:
        return getattr(request, "_service_refusal", None) is not None

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if not self.refused(request):
            super().save_related(request, form, formsets, change)  # type: ignore[misc]

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if not self.refused(request):
            return super().log_addition(request, obj, message)  # type: ignore[misc]
        return None

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if not self.refused(request):
            return super().log_change(request, obj, message)  # type: ignore[misc]
        return None

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None) -> HttpResponse:
        if self.refused(request):
            return HttpResponseRedirect(request.get_full_path())
        return super().response_add(request, obj, post_url_continue)  # type: ignore[misc]

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        if self.refused(request):
            return HttpResponseRedirect(request.get_full_path())
        return super().response_change(request, obj)  # type: ignore[misc]
