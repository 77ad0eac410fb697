from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import context

# The request id is taken from a trusted proxy header when present so that the portal's audit rows
# can be joined with the load balancer's logs; otherwise a fresh one is generated.
REQUEST_ID_HEADER = "HTTP_X_REQUEST_ID"


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address. X-Forwarded-For is trusted only when USE_X_FORWARDED_FOR is set."""
    if getattr(settings, "USE_X_FORWARDED_FOR", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get(REQUEST_ID_HEADER, "")
        request_id = incoming[:64] if incoming.isascii() and incoming else context.new_request_id()
        user = getattr(request, "user", None)
        ctx = context.RequestContext(
            request_id=request_id,
            source="admin" if request.path.startswith("/admin/") else "web",
            ip=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
            user_id=user.pk if user is not None and user.is_authenticated else None,
        )
        with context.bind(ctx):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
