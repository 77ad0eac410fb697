"""Small pieces shared by the admin classes: domain errors become messages, intermediate pages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .errors import DomainError


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
