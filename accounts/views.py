"""Sign-in (password, then the authenticator's code for those who set one up) and enrolment of an
authenticator app with recovery codes."""

from __future__ import annotations

import base64
import io
from typing import Any

import qrcode
import qrcode.image.svg
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import mfa


class PortalLoginView(auth_views.LoginView):
    form_class = mfa.PortalLoginForm

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        device = getattr(form.get_user(), "otp_device", None)
        if device is not None:
            otp_login(self.request, device)  # the session is verified by the second factor
        return response


def _qr_svg(uri: str) -> str:
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg") :]  # without the XML declaration, to inline it


@never_cache
@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator: scan the code (or type the key), confirm with a code from the app,
    keep the recovery codes shown once. Setting up again replaces the old authenticator."""
    user = request.user
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    context: dict[str, Any] = {"enrolled": mfa.has_device(user), "verified": mfa.is_verified(user), "nav": ""}
    if request.method == "POST" and request.POST.get("action") == "recovery":
        if not mfa.is_verified(user):
            messages.error(request, "Sign in with your authenticator code first to make new recovery codes.")
            return redirect("two_factor")
        context["codes"] = mfa.recovery_codes_reset(user=user)
        return render(request, "registration/two_factor.html", context)
    if request.method == "POST":
        codes = mfa.totp_confirm(user=user, device=device, token=request.POST.get("token", ""))
        if codes is None:
            context["error"] = "That code does not match. Check the time on your phone and try the newest code."
        else:
            otp_login(request, device)
            context.update(codes=codes, enrolled=True, verified=True)
            return render(request, "registration/two_factor.html", context)
    secret = base64.b32encode(device.bin_key).decode()
    context.update(qr=mark_safe(_qr_svg(device.config_url)), secret=secret)  # noqa: S308 - generated SVG
    return render(request, "registration/two_factor.html", context)
