"""The portal's break-glass pages: the on-call engineer's form on a dataset, a use (the result page
for the engineer, the review page for the officer), and the list of uses. Each calls the same
service as the API; a refusal shows on the field it names."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from accounts.mfa import has_device
from governance import durations
from governance.errors import DomainError
from governance.selectors.catalog import datasets_visible_to

from .forms import ActivateForm, ReviewForm
from .selectors import may_break_glass_on, policy_for_dataset, statements_of, use_for, uses_visible_to
from .services.activation import break_glass_activate
from .services.review import break_glass_review, may_review


@login_required
def activate(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(datasets_visible_to(request.user).select_related("classification", "source"), pk=pk)
    form = ActivateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            use = break_glass_activate(
                actor=request.user,
                dataset=dataset,
                reason=form.cleaned_data["reason"],
                hours=form.cleaned_data["hours"],
                otp_token=form.cleaned_data["otp_token"],
                temporary_login=form.cleaned_data["temporary_login"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "The glass is broken: your access is being applied now; officers were told.")
            return redirect("breakglass:use", pk=use.pk)
    context = {
        "dataset": dataset,
        "form": form,
        "rules": policy_for_dataset(dataset),
        "may": may_break_glass_on(request.user, dataset),
        "has_device": has_device(request.user),
    }
    return render(request, "breakglass/activate.html", context, status=400 if form.errors else 200)


@login_required
def use_detail(request: HttpRequest, pk: int) -> HttpResponse:
    use = use_for(request.user, pk)
    if use is None:
        raise Http404
    reviewable = use.reviewed_at is None and may_review(request.user, use)
    form = ReviewForm(request.POST or None) if reviewable else None
    if request.method == "POST":
        if form is None:
            messages.error(request, "You cannot review this use.")
            return redirect("breakglass:use", pk=use.pk)
        if form.is_valid():
            try:
                break_glass_review(
                    actor=request.user, use=use, outcome=form.cleaned_data["outcome"], note=form.cleaned_data["note"]
                )
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, "Your review is recorded.")
                return redirect("breakglass:use", pk=use.pk)
    context = {
        "use": use,
        "grant": use.grant,
        "in_force": use.grant.is_in_force(timezone.now()),
        "duration": durations.words(use.grant.ends_at - use.grant.starts_at),
        "statements": statements_of(use),
        "form": form,
    }
    return render(request, "breakglass/use.html", context, status=400 if form is not None and form.errors else 200)


@login_required
def use_list(request: HttpRequest) -> HttpResponse:
    qs = uses_visible_to(request.user)
    state = request.GET.get("state", "")
    if state == "unreviewed":
        qs = qs.filter(reviewed_at__isnull=True)
    elif state == "overdue":
        qs = qs.filter(reviewed_at__isnull=True, review_due_at__lte=timezone.now())
    page = Paginator(qs.order_by("-activated_at", "-pk"), 50).get_page(request.GET.get("page"))
    query = f"state={state}" if state in ("unreviewed", "overdue") else ""
    return render(request, "breakglass/uses.html", {"page": page, "state": state, "state_query": query})
