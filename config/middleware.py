"""Health probes answered before the host check and the HTTPS redirect (docs/deploy.md#health-probes).

A kubelet or a container engine probes the pod's own address over plain HTTP: `Host: 10.1.2.3`, no
TLS. Behind the portal's production settings that request would get a 301 to https (SecurityMiddleware)
or, before that, a 400 (the Host is not in ALLOWED_HOSTS, checked by the redirect and by
CommonMiddleware). The paths in settings.HEALTH_CHECK_PATHS are exempt from the redirect
(SECURE_REDIRECT_EXEMPT, derived from them) and this middleware, placed right after SecurityMiddleware,
calls their views itself for GET and HEAD, so that no later middleware reads the Host. Every other
path keeps both checks. This is safe because a health view reads nothing of the request (no Host-
based URL, no cookie, no session) and its answer holds nothing secret.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import resolve


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.paths = frozenset(settings.HEALTH_CHECK_PATHS)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in self.paths and request.method in ("GET", "HEAD"):
            match = resolve(request.path_info)
            response: HttpResponse = match.func(request, *match.args, **match.kwargs)
            return response
        return self.get_response(request)
