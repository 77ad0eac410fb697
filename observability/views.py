"""The probe endpoints: liveness, readiness and Prometheus metrics (docs/operations.md).

Answered by `observability.middleware.ProbeMiddleware` before any other middleware: no SSL
redirect, no Host check (a kubelet or Prometheus calls a pod IP over plain HTTP), no session.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import health, instruments
from .collector import ProductCollector

READY_DEFAULT = list(health.CHECKS)


def bearer_ok(authorization: str) -> bool:
    """The Authorization header carries METRICS_TOKEN as a bearer token (Prometheus, an operator's curl)."""
    token = settings.METRICS_TOKEN
    return bool(token) and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def operator(request: HttpRequest) -> bool:
    return bearer_ok(request.META.get("HTTP_AUTHORIZATION", ""))


def metrics_refusal(authorization: str) -> tuple[int, str] | None:
    """Why a metrics scrape is refused (status, text), or None: a bearer METRICS_TOKEN is required;
    without one configured, only a DEBUG process answers. The one rule for /metrics and for a
    worker's own endpoint (observability.exporter)."""
    if not settings.METRICS_TOKEN and not settings.DEBUG:
        return 403, "metrics are off: set METRICS_TOKEN\n"
    if settings.METRICS_TOKEN and not bearer_ok(authorization):
        return 401, "a bearer token is required\n"
    return None


def live(request: HttpRequest) -> HttpResponse:
    """The process answers; no dependency is consulted (a database outage must not restart pods)."""
    return HttpResponse("ok", content_type="text/plain")


def ready(request: HttpRequest) -> HttpResponse:
    """200 when every check passes, else 503. `?checks=database,redis` runs only those (a web pod's
    readiness need not depend on the workers). Anonymous callers get the status and the names of
    the failing checks; an operator (METRICS_TOKEN) gets each check's detail."""
    wanted = [n for n in request.GET.get("checks", "").split(",") if n] or READY_DEFAULT
    unknown = [n for n in wanted if n not in health.CHECKS]
    if unknown:
        return JsonResponse(
            {"checks": [f"unknown check {n!r}; known: {', '.join(health.CHECKS)}" for n in unknown[:5]]}, status=400
        )
    outcomes = health.run(wanted)
    ok = all(o.ok for o in outcomes)
    body: dict[str, object] = {"status": "ok" if ok else "fail", "failing": [o.name for o in outcomes if not o.ok]}
    if operator(request):
        body["checks"] = {o.name: {"ok": o.ok, "detail": o.detail} for o in outcomes}
    return JsonResponse(body, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: what the processes observed, then the gauges read from the database.
    A bearer METRICS_TOKEN is required; without one configured, only a DEBUG server answers."""
    refusal = metrics_refusal(request.META.get("HTTP_AUTHORIZATION", ""))
    if refusal is not None:
        status, text = refusal
        response = HttpResponse(text, status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    product = CollectorRegistry(auto_describe=False)
    product.register(ProductCollector())
    body = generate_latest(instruments.registry()) + generate_latest(product)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
