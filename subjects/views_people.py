"""The data-subject pages that are not the officers': a dataset's handling (linked from the dataset
page; everyone who sees the dataset reads it, its owners and stewards set it), and the self-service
form with its "my data requests" list (SUBJECTS_SELF_SERVICE; 404 when off).

The self-service form has no identifier field: the service takes the account's own e-mail address,
whatever else is posted, so nobody can ask about somebody else (docs/subjects.md#self-service).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from governance.errors import DomainError
from governance.selectors.catalog import datasets_visible_to

from .forms import HandlingForm, SelfServiceForm
from .models import DatasetHandling, HandlingAction
from .permissions import may_set_handling
from .selectors import handling_of, identifiers_of_dataset, relationships_of_dataset, requests_filed_by
from .services.identifiers import dataset_handling_set
from .services.self_service import self_service_enabled, subject_request_file


@login_required
def dataset_handling(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(datasets_visible_to(request.user).select_related("source"), pk=pk)
    held = handling_of(dataset.pk)
    may = may_set_handling(request.user, dataset)
    current = held or DatasetHandling(dataset=dataset, action=HandlingAction.ERASE)
    initial = {"action": current.action, "legal_basis": current.legal_basis, "reason": current.reason}
    form = HandlingForm(request.POST or None, initial=initial) if may else None
    if request.method == "POST":
        if form is None:
            messages.error(request, f"Only an owner or steward of {dataset.qualified_name} can set its handling.")
            return redirect("subjects:handling", pk=dataset.pk)
        if form.is_valid():
            try:
                dataset_handling_set(actor=request.user, dataset=dataset, **form.cleaned_data)
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, "The handling is saved: the next preview of a request uses it.")
                return redirect("subjects:handling", pk=dataset.pk)
    context = {
        "dataset": dataset,
        "handling": current,
        "is_set": held is not None,
        "form": form,
        "identifiers": list(identifiers_of_dataset(dataset.pk)),
        "relationships": list(relationships_of_dataset(dataset.pk)),
    }
    return render(request, "subjects/handling.html", context, status=400 if form is not None and form.errors else 200)


def _enabled() -> None:
    if not self_service_enabled():
        raise Http404


@login_required
def my_requests(request: HttpRequest) -> HttpResponse:
    _enabled()
    filed = list(requests_filed_by(request.user)[:100])
    return render(request, "subjects/mine.html", {"nav": "my-subjects", "filed": filed})


@login_required
def my_request_new(request: HttpRequest) -> HttpResponse:
    _enabled()
    form = SelfServiceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            # Only the kind and the message are read from the post: the identifiers are the account's.
            made = subject_request_file(
                actor=request.user, kind=form.cleaned_data["kind"], message=form.cleaned_data["message"]
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(
                request,
                f"Your request #{made.pk} is filed. The privacy officers answer it by {made.due_at:%Y-%m-%d}.",
            )
            return redirect("subjects:mine")
    context = {"nav": "my-subjects", "form": form, "email": getattr(request.user, "email", "")}
    return render(request, "subjects/file.html", context, status=400 if form.errors else 200)
