"""Admin for JIT credentials on the Grant page (mixed into GrantAdmin in governance/admin.py).

The Grant page shows the state of the grant's temporary login and, for the grantee, a link to a
page that reveals the password once. Revealing is a POST (a GET never consumes the one reveal: link
previews and prefetchers must not burn it); the password is rendered in that response only, which
the admin marks never-cache, and is never stored in a message (messages live in the session).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .admin_helpers import run_service
from .models import Grant, GrantStatus
from .services.jit import grant_jit_credentials_reveal, jit_psql_command


class GrantJitAdminMixin:
    """A read-only "temporary login" field and the reveal-once view."""

    # Provided by ModelAdmin (this class is mixed in before it).
    admin_site: Any
    opts: Any
    get_queryset: Any

    @admin.display(description="temporary database login")
    def jit_login(self, obj: Grant) -> str:
        if not obj.jit_role:
            return "—"
        if obj.jit_dropped_at is not None:
            state = f"dropped at {obj.jit_dropped_at:%Y-%m-%d %H:%M:%S %Z}"
        elif obj.jit_revealed_at is not None:
            state = f"password revealed at {obj.jit_revealed_at:%Y-%m-%d %H:%M:%S %Z}"
        elif obj.jit_password_encrypted and obj.status == GrantStatus.ACTIVE:
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_jit_reveal", args=[obj.pk])
            return format_html(
                '{} — valid until {} — <a href="{}">reveal the password (once, grantee only)</a>',
                obj.jit_role,
                f"{obj.ends_at:%Y-%m-%d %H:%M:%S %Z}",
                url,
            )
        else:
            state = "not created yet"
        return f"{obj.jit_role} — {state}"

    def get_urls(self) -> list[Any]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_jit_reveal"
        return [
            path("<int:object_id>/jit-reveal/", self.admin_site.admin_view(self.jit_reveal_view), name=name),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def jit_reveal_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """GET: a confirmation page. POST: reveal (the service checks grantee, once, active)."""
        grant = get_object_or_404(self.get_queryset(request), pk=object_id)
        change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[grant.pk])
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": f"Temporary database login of grant #{grant.pk}",
            "opts": self.opts,
            "grant": grant,
            "change_url": change_url,
            "password": None,
        }
        if request.method == "POST":
            revealed: list[str] = []
            reveal = lambda: revealed.append(grant_jit_credentials_reveal(grant=grant, actor=request.user))  # noqa: E731
            if not run_service(request, reveal):
                return HttpResponseRedirect(change_url)
            grant.refresh_from_db()
            context["password"] = revealed[0]
            context["psql"] = jit_psql_command(grant)
        return TemplateResponse(request, "admin/governance/grant/jit_reveal.html", context)
