"""The portal's quality pages (the section itself is rendered by quality.templatetags on the dataset
page): define or change a check, remove it, review owner-written SQL, run the checks now. Each calls
the same service as the admin and the API; a refusal shows on the field it names."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from governance.errors import DomainError
from governance.selectors.catalog import datasets_visible_to

from .forms import CheckForm, form_field
from .models import QualityCheck
from .permissions import may_define_checks
from .services.checks import quality_check_create, quality_check_delete, quality_check_review, quality_check_update
from .services.runs import quality_run_request


def _back(dataset_id: int) -> HttpResponse:
    return redirect(reverse("portal:dataset", args=[dataset_id]) + "#quality")


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
    return _back(dataset.pk)


@login_required
def check_form(request: HttpRequest, pk: int, check_id: int | None = None) -> HttpResponse:
    """New check (`check_id` None) or a change of one, for the dataset's owner and stewards."""
    dataset = get_object_or_404(datasets_visible_to(request.user), pk=pk)
    check = get_object_or_404(QualityCheck, pk=check_id, dataset=dataset) if check_id is not None else None
    if not may_define_checks(request.user, dataset):
        messages.error(request, f"Only an owner or steward of {dataset.qualified_name} defines its quality checks.")
        return _back(dataset.pk)
    form = CheckForm(request.POST or None, dataset=dataset, check=check)
    if request.method == "POST" and form.is_valid():
        fields = form.fields_for_service()
        try:
            if check is None:
                quality_check_create(actor=request.user, dataset=dataset, **fields)
            else:
                quality_check_update(actor=request.user, check=check, **fields)
        except DomainError as exc:
            target = form_field(exc.field)
            form.add_error(target if target in form.fields else None, exc.message)
        else:
            messages.success(request, f"Check {fields['name']!r} saved; it runs with the dataset's next run.")
            return _back(dataset.pk)
    context = {"dataset": dataset, "form": form, "check": check, "nav": "catalog"}
    return render(request, "quality/check_form.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def check_action(request: HttpRequest, pk: int, check_id: int, action: str) -> HttpResponse:
    dataset = get_object_or_404(datasets_visible_to(request.user), pk=pk)
    check = get_object_or_404(QualityCheck, pk=check_id, dataset=dataset)
    try:
        if action == "delete":
            quality_check_delete(actor=request.user, check=check)
            messages.success(request, f"Check {check.name!r} removed.")
        else:
            quality_check_review(actor=request.user, check=check)
            messages.success(request, f"Check {check.name!r} reviewed: it runs from the next run on.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return _back(dataset.pk)
