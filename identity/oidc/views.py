"""The redirect to the provider, the callback, and the portal's own code after a sign-in without MFA.

The callback logs the person in only after the service has created or updated the account and
synced the groups. The session counts as verified by a second factor (django-otp) when the ID
token asserts MFA; otherwise a person who set up an authenticator enters its code first, as the
password sign-in asks.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.contrib import auth, messages
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as otp_login
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts import mfa

from . import config
from .models import IdentityProviderDevice

LOGGER = logging.getLogger(__name__)
PENDING = "oidc_pending_second_factor"


class PortalOIDCAuthenticationRequestView(OIDCAuthenticationRequestView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)  # endpoints: in get()

    def get(self, request: HttpRequest) -> HttpResponse:
        if not config.enabled():
            raise Http404("OIDC sign-in is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = config.provider().authorization_endpoint
        except config.ProviderUnavailable as exc:
            LOGGER.warning("OIDC provider unavailable: %s", exc)
            messages.error(request, f"{config.provider_name()} cannot be reached. Try again in a moment.")
            return redirect("login")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        response: HttpResponse = super().get(request)
        return response


class PortalOIDCCallbackView(OIDCAuthenticationCallbackView):
    def get(self, request: HttpRequest) -> HttpResponse:
        if not config.enabled():
            raise Http404("OIDC sign-in is not configured")
        try:
            response: HttpResponse = super().get(request)
        except (requests.RequestException, SuspiciousOperation, config.ProviderUnavailable) as exc:
            # A code used twice, a state this browser did not start, a token that fails its checks,
            # the provider down: the login page says so, never a server error.
            LOGGER.warning("OIDC sign-in failed: %s: %s", type(exc).__name__, exc)
            return self.login_failure()
        return response

    def login_failure(self) -> HttpResponse:
        reason = getattr(self.request, "oidc_refusal", None)
        messages.error(self.request, reason or f"Signing in with {config.provider_name()} did not work. Try again.")
        return HttpResponseRedirect(reverse("login"))

    def login_success(self) -> HttpResponse:
        user = self.user
        if getattr(self.request, "oidc_mfa_asserted", False):
            _log_in(self.request, user, IdentityProviderDevice.objects.get_or_create(user=user, confirmed=True)[0])
            return HttpResponseRedirect(self.success_url)
        if mfa.has_device(user):
            # As the password sign-in: no session until the authenticator's code is entered.
            self.request.session[PENDING] = {"user": user.pk, "backend": user.backend, "next": self.success_url}
            return redirect("oidc_verify")
        _log_in(self.request, user, None)
        return HttpResponseRedirect(self.success_url)


def _log_in(request: HttpRequest, user: Any, device: Any) -> None:
    auth.login(request, user)  # a new session key; another person's session is flushed
    if device is not None:
        otp_login(request, device)
    else:
        request.session.pop(DEVICE_ID_SESSION_KEY, None)  # verified only by this sign-in's factor


@never_cache
def second_factor(request: HttpRequest) -> HttpResponse:
    """The authenticator's code after an OIDC sign-in that asserted no MFA."""
    pending = request.session.get(PENDING)
    if not isinstance(pending, dict):
        return redirect("login")
    user = auth.get_user_model().objects.filter(pk=int(pending.get("user") or 0), is_active=True).first()
    if user is None:
        request.session.pop(PENDING, None)
        return redirect("login")
    error = ""
    if request.method == "POST":
        device = mfa.second_factor_verify(user=user, token=str(request.POST.get("otp_token", "")))
        if device is not None:
            request.session.pop(PENDING, None)
            user.backend = pending["backend"]
            _log_in(request, user, device)
            target = str(pending.get("next") or "")
            safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
            return HttpResponseRedirect(target if target and safe else reverse("portal:catalog"))
        error = "That code does not match. Try the newest code, or a recovery code."
    return render(request, "registration/oidc_second_factor.html", {"error": error, "nav": ""})
