"""The portal's quality actions (the section itself is rendered by quality.templatetags on the
dataset page): run the checks now."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance.errors import DomainError
from governance.selectors.catalog import datasets_visible_to

from .services.runs import quality_run_request


@login_required
@require_POST
def run_now(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(datasets_visible_to(request.user), pk=pk)
    try:
        quality_run_request(actor=request.user, dataset=dataset)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The checks run now; this page shows their results when they finish.")
    return redirect(reverse("portal:dataset", args=[dataset.pk]) + "#quality")
