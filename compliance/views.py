"""The posture page (`/portal/compliance/`) and its PDF export: security officers, governance
admins and auditors (and superusers) only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.roles import sees_everything
from config.pdf import render_pdf

from .controls import compliance_posture

WHO = "security officers, governance admins and auditors"


def _forbidden(request: HttpRequest) -> HttpResponse:
    context = {"nav": "compliance", "what": "the compliance posture", "who": WHO}
    return render(request, "portal/forbidden.html", context, status=403)


@login_required
def posture(request: HttpRequest) -> HttpResponse:
    if not sees_everything(request.user):
        return _forbidden(request)
    return render(request, "compliance/posture.html", {"posture": compliance_posture(), "nav": "compliance"})


@login_required
def posture_pdf(request: HttpRequest) -> HttpResponse:
    if not sees_everything(request.user):
        return _forbidden(request)
    found = compliance_posture()
    document = render_pdf("compliance/posture_pdf.html", {"posture": found}, request=request)
    stamp = timezone.localtime(found.generated_at).strftime("%Y%m%d-%H%M")
    response = HttpResponse(document, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="compliance-posture-{stamp}.pdf"'
    return response
