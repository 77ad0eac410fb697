"""The portal's review pages (`/portal/reviews/`): the campaigns with their progress, one campaign
with progress per reviewer and its items, the reviewer's inbox (decide one item or many, delegate),
and the evidence CSV. Every write calls a service; refusals are shown, never half-done."""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.roles import sees_everything
from config.pdf import render_pdf
from governance.errors import DomainError
from governance.selectors.usage import last_use_for_grants
from governance.views.inbox import parse_ids

from .assignment import may_manage_campaigns
from .forms import DecisionForm, DelegateForm
from .models import ReviewCampaign
from .selectors import (
    EVIDENCE_COLUMNS,
    campaign_items,
    campaign_progress,
    campaigns_visible_to,
    evidence_rows,
    review_inbox,
    revocation_verified_at,
    scope_words,
)
from .services import campaigns as campaign_services
from .services import decisions

PAGE_SIZE = 50


def _campaign(request: HttpRequest, pk: int) -> ReviewCampaign:
    found = campaigns_visible_to(request.user).filter(pk=pk).first()
    if found is None:
        raise Http404("No such campaign among those you may see.")
    return found


@login_required
def campaigns(request: HttpRequest) -> HttpResponse:
    rows: list[Any] = list(campaigns_visible_to(request.user))  # annotated with total and decided
    for c in rows:
        c.percent = round(100 * c.decided / c.total) if c.total else 100
    pending = review_inbox(request.user).count()
    return render(request, "reviews/campaigns.html", {"nav": "reviews", "campaigns": rows, "pending": pending})


@login_required
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign(request, pk)
    overall, per_reviewer = campaign_progress(campaign)
    page = Paginator(campaign_items(campaign, request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    for item in page:
        item.verified_at = revocation_verified_at(item)  # type: ignore[attr-defined]  # for the template
    return render(
        request,
        "reviews/campaign.html",
        {
            "nav": "reviews",
            "campaign": campaign,
            "scope": scope_words(campaign),
            "overall": overall,
            "per_reviewer": per_reviewer if sees_everything(request.user) else [],
            "page": page,
            "manages": may_manage_campaigns(request.user),
            "evidence": sees_everything(request.user),
        },
    )


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    page = Paginator(review_inbox(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    # When each grant was last used (or why its source cannot tell): one query for the page.
    uses = last_use_for_grants([item.grant_id for item in page if item.grant_id])
    rows = [(item, uses.get(item.grant_id) if item.grant_id else None) for item in page]
    return render(request, "reviews/inbox.html", {"nav": "reviews", "page": page, "rows": rows})


def _decide(request: HttpRequest, ids: list[int]) -> None:
    form = DecisionForm(request.POST)
    if not form.is_valid():
        field, errors = next(iter(form.errors.items()))
        messages.error(request, f"{field}: {errors[0]}")
        return
    try:
        decided = decisions.review_items_decide(
            ids=ids,
            actor=request.user,
            decision=form.cleaned_data["decision"],
            comment=form.cleaned_data["comment"],
            new_ends_at=form.new_ends_at(),
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        what = decided[0].describe() if len(decided) == 1 else f"{len(decided)} items"
        messages.success(request, f"{form.cleaned_data['decision'].capitalize()}: {what}.")


@login_required
@require_POST
def item_decide(request: HttpRequest, pk: int) -> HttpResponse:
    _decide(request, [pk])
    return redirect("reviews:inbox")


@login_required
@require_POST
def items_decide(request: HttpRequest) -> HttpResponse:
    ids = parse_ids(request.POST.getlist("ids"))
    if not ids:
        messages.error(request, "Choose at least one item.")
    else:
        _decide(request, ids)
    return redirect("reviews:inbox")


@login_required
@require_POST
def item_delegate(request: HttpRequest, pk: int) -> HttpResponse:
    form = DelegateForm(request.POST)
    if not form.is_valid():
        messages.error(request, str(form.errors["to"][0]))
        return redirect("reviews:inbox")
    try:
        item = decisions.review_item_delegate(item=pk, actor=request.user, to=form.cleaned_data["to"])
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Delegated to {item.reviewer}: {item.describe()}.")
    return redirect("reviews:inbox")


def _campaign_step(request: HttpRequest, pk: int, step: Callable[..., Any], done: str) -> HttpResponse:
    campaign = _campaign(request, pk)
    try:
        step(campaign=campaign.pk, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{campaign.name} {done}")
    return redirect("reviews:campaign", pk=pk)


@login_required
@require_POST
def campaign_start(request: HttpRequest, pk: int) -> HttpResponse:
    return _campaign_step(request, pk, campaign_services.review_campaign_start, "started: the reviewers were told.")


@login_required
@require_POST
def campaign_close(request: HttpRequest, pk: int) -> HttpResponse:
    done = "closed; its evidence is sealed in the audit trail."
    return _campaign_step(request, pk, campaign_services.review_campaign_close, done)


def evidence_csv_response(campaign: ReviewCampaign) -> HttpResponse:
    """The evidence of one campaign as CSV (the portal and the API answer the same bytes)."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="review-{campaign.pk}-evidence.csv"'
    writer = csv.DictWriter(response, fieldnames=EVIDENCE_COLUMNS)
    writer.writeheader()
    for row in evidence_rows(campaign):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return response


def _cell(value: Any) -> Any:
    """A spreadsheet must not run a comment as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def evidence_pdf_response(campaign: ReviewCampaign, request: HttpRequest) -> HttpResponse:
    """The evidence pack of one campaign as PDF: the same rows as the CSV, the scope, and the audit
    checkpoint taken at the close (the portal and the API answer the same document)."""
    context = {
        "campaign": campaign,
        "scope": scope_words(campaign),
        "rows": evidence_rows(campaign),
        "checkpoint": campaign.close_checkpoint or None,
        "exported_at": timezone.now(),
    }
    response = HttpResponse(
        render_pdf("reviews/evidence_pdf.html", context, request=request), content_type="application/pdf"
    )
    response["Content-Disposition"] = f'attachment; filename="review-{campaign.pk}-evidence.pdf"'
    return response


@login_required
def campaign_evidence(request: HttpRequest, pk: int) -> HttpResponse:
    if not sees_everything(request.user):
        return render(request, "portal/forbidden.html", {"nav": "reviews", "what": "review evidence"}, status=403)
    return evidence_csv_response(_campaign(request, pk))


@login_required
def campaign_evidence_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    if not sees_everything(request.user):
        return render(request, "portal/forbidden.html", {"nav": "reviews", "what": "review evidence"}, status=403)
    return evidence_pdf_response(_campaign(request, pk), request)
