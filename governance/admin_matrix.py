"""The permission matrix in the admin (mixed into GrantAdmin): the portal's matrix with forms in its
cells to approve or deny a pending request and to revoke a grant. Each form posts to one action
view that calls the same services as everywhere else (they check who may act and record the audit
event), then returns to the same matrix page with a message.

The page does not call `admin_site.each_context`: building the admin's app list costs permission
queries on every load, and the matrix keeps a fixed, small query count (tests/portal/test_matrix.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from .admin_helpers import run_service
from .selectors.matrix import may_view_matrix
from .selectors.requests import access_requests_visible_to, grants_visible_to
from .services import grants as grant_services
from .services import requests as request_services
from .views.inbox import parse_ids
from .views.matrix import matrix_context


class GrantMatrixAdminMixin:
    admin_site: Any
    opts: Any

    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("matrix/", self.admin_site.admin_view(self.matrix_view), name=f"{prefix}_matrix"),
            path("matrix/act/", self.admin_site.admin_view(self.matrix_action_view), name=f"{prefix}_matrix_act"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def matrix_view(self, request: HttpRequest) -> HttpResponse:
        if not may_view_matrix(request.user):
            messages.error(
                request, "The permission matrix is for dataset owners, security officers, admins and auditors."
            )
            return HttpResponseRedirect(reverse("admin:index"))
        site = self.admin_site
        context = {
            "site_header": site.site_header,
            "site_title": site.site_title,
            "site_url": site.site_url,
            "has_permission": True,
            "is_nav_sidebar_enabled": False,
            "available_apps": [],
            "title": "Permission matrix",
            "opts": self.opts,
            **matrix_context(request, actions=True),
        }
        return TemplateResponse(request, "admin/governance/grant/matrix.html", context)

    def matrix_action_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_matrix")
        action = request.POST.get("action")
        ids = parse_ids([request.POST.get("id", "")])
        if not ids:
            messages.error(request, "Choose a request or a grant to act on.")
            return HttpResponseRedirect(back)
        target = ids[0]
        # Ids outside what this user may see are "not found": no probing of other requests.
        user = request.user
        visible = (
            grants_visible_to(user).filter(pk=target)
            if action == "revoke"
            else access_requests_visible_to(user).filter(pk=target)
        )
        if not visible.exists():
            messages.error(request, f"{'Grant' if action == 'revoke' else 'Request'} #{target}: not found.")
            return HttpResponseRedirect(back)
        comment = request.POST.get("comment", "")
        stage = request.POST.get("stage") or None
        if action == "approve":
            run_service(
                request,
                lambda: request_services.access_request_approve(
                    access_request=target, approver=user, stage=stage, comment=comment
                ),
                success=f"Request #{target}: stage approved.",
            )
        elif action == "deny":
            run_service(
                request,
                lambda: request_services.access_request_deny(
                    access_request=target, approver=user, stage=stage, comment=comment
                ),
                success=f"Request #{target} denied.",
            )
        elif action == "revoke":
            run_service(
                request,
                lambda: grant_services.grant_revoke(grant=target, actor=user, reason=comment),
                success=f"Grant #{target} revoked; its privileges are being removed.",
            )
        else:
            messages.error(request, "Choose approve, deny or revoke.")
        return HttpResponseRedirect(back)
