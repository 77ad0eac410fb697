"""The probes' entry, and one log line per request.

`ProbeMiddleware` is first in MIDDLEWARE: it answers /healthz, /health/live, /health/ready and
/metrics before SecurityMiddleware (no redirect to HTTPS) and before anything reads the Host
header (ALLOWED_HOSTS need not list pod IPs). The only place these paths are routed.

`RequestLogMiddleware` sits right after `audit.middleware.AuditContextMiddleware`: inside its
context, so its line carries the request id and the user (also an API token's), and it counts the
API's answers by status for /metrics.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from . import instruments, views

ROUTES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.live,
    "/health/live": views.live,
    "/health/ready": views.ready,
    "/metrics": views.metrics,
}
API_PREFIXES = ("/api/", "/scim/")
# Label values come from a fixed set: a client's made-up method must not grow the metric's series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The one secret a path carries: the password-reset link's token (Django then moves it to the session).
RESET_TOKEN = re.compile(r"^(/accounts/reset/[^/]+/)(?!set-password/)[^/]+")

request_log = logging.getLogger("observability.requests")


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = ROUTES.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        response = view(request)
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        ms = (time.perf_counter() - started) * 1000
        # Never the query string: it may carry a code or a search term.
        path = RESET_TOKEN.sub(r"\1[redacted]", request.path)
        method = request.method if request.method in METHODS else "other"
        if path.startswith(API_PREFIXES):
            instruments.api_requests.labels(method=method, status=str(response.status_code)).inc()
        request_log.info(
            "%s %r %s %.1f ms",
            method,
            path,
            response.status_code,
            ms,
            # The request id and the user come from the audit context (observability.logs).
            extra={"http": {"method": method, "path": path, "status": response.status_code, "ms": round(ms, 1)}},
        )
        return response
