from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import context

# Behind TRUSTED_PROXY_COUNT proxies, the request id set by the proxy is kept so that audit rows
# join with the load balancer's logs; otherwise (a client could send anything) a fresh one is made.
REQUEST_ID_HEADER = "HTTP_X_REQUEST_ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address.

    With N trusted proxies in front (TRUSTED_PROXY_COUNT), the client is the address the outermost
    of them appended: the N-th entry from the right of X-Forwarded-For. Entries further left were
    written by the client and can be forged, so they are never used. With no proxy configured the
    header is ignored and REMOTE_ADDR is the client.
    """
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            candidate = hops[-proxies]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                return None
    return request.META.get("REMOTE_ADDR") or None


def request_id(request: HttpRequest) -> str:
    incoming = request.META.get(REQUEST_ID_HEADER, "")
    trusted = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0)) > 0
    if trusted and REQUEST_ID_PATTERN.fullmatch(incoming):
        return incoming
    return context.new_request_id()


def _source(path: str) -> str:
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/slack/"):  # Slack's signed callbacks (buttons, the link command)
        return "slack"
    return "api" if path.startswith("/api/") else "web"


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id(request)
        user = getattr(request, "user", None)
        ctx = context.RequestContext(
            request_id=rid,
            source=_source(request.path),
            ip=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
            user_id=user.pk if user is not None and user.is_authenticated else None,
        )
        with context.bind(ctx):
            response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response
