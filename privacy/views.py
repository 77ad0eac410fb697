"""The portal's privacy pages (`/portal/privacy/`): the grantee's aggregate grants, a grant's page
(budget spent and remaining, a query form, the history), and the owner's policy of a dataset."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from governance.errors import DomainError, NotFound
from governance.selectors.catalog import datasets_visible_to

from .forms import AggregateQueryForm, PrivacyPolicyForm
from .selectors import aggregate_grant_of, aggregate_grants_of, budget_of, policy_of, queries_of
from .services.policy import privacy_policy_save
from .services.queries import privacy_query_run

HISTORY = 50


@login_required
def grants(request: HttpRequest) -> HttpResponse:
    rows = [(g, budget_of(g)) for g in aggregate_grants_of(request.user)[:200]]
    return render(request, "privacy/grants.html", {"rows": rows, "nav": "privacy"})


@login_required
def grant_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        grant = aggregate_grant_of(request.user, pk)
    except NotFound:
        raise Http404("No such aggregate grant of yours.") from None
    form = AggregateQueryForm(request.POST or None)
    answer = None
    if request.method == "POST" and form.is_valid():
        try:
            answer = privacy_query_run(grant_id=grant.pk, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            grant = aggregate_grant_of(request.user, pk)  # the budget after this query
    context = {
        "grant": grant,
        "budget": budget_of(grant),
        "form": form,
        "answer": answer,
        "policy": policy_of(grant.dataset),
        "queries": queries_of(grant)[:HISTORY],
        "nav": "privacy",
    }
    return render(request, "privacy/grant.html", context, status=400 if form.errors else 200)


@login_required
def dataset_policy(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = datasets_visible_to(request.user).filter(pk=pk).first()
    if dataset is None:
        raise Http404("No such dataset.")
    policy = policy_of(dataset)
    form = PrivacyPolicyForm(
        request.POST or None, initial=PrivacyPolicyForm.initial_of(policy, dataset.aggregates_only)
    )
    if request.method == "POST" and form.is_valid():
        try:
            privacy_policy_save(dataset=dataset, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"The privacy policy of {dataset.qualified_name} is saved.")
            return redirect("privacy:dataset_policy", pk=dataset.pk)
    context = {"dataset": dataset, "policy": policy, "form": form, "nav": "catalog"}
    return render(request, "privacy/dataset_policy.html", context, status=400 if form.errors else 200)
