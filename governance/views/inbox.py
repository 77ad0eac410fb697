"""The approver's inbox: the requests whose current stage waits for me, each with its risk spelled
out (classification, sensitive columns asked for, level, duration, what the grantee already holds),
decided one at a time (HTMX swaps the card for the outcome) or in bulk. Decisions call the same
services as the admin and the API; every refusal is shown, nothing is half-done."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.postgres.aggregates import ArrayAgg
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import mfa

from ..errors import DomainError
from ..models import AccessLevel, AccessRequest, Column, Grant, GrantStatus, TagStatus, tag_label
from ..policy import parse_epsilon, pii_q
from ..selectors.requests import access_requests_awaiting, access_requests_visible_to, grants_visible_to
from ..services import requests as request_services
from .access import HtmxHttpRequest

PAGE_SIZE = 25
LONG_DAYS = 30
MAX_BULK = 100
BIGINT = 2**63 - 1


def parse_ids(values: list[str]) -> list[int]:
    """Ids from a form, in order, without duplicates; anything not a positive bigint is dropped."""
    ids: dict[int, None] = {}  # ordered and without duplicates in linear time
    for raw in values:
        # isascii: "²".isdigit() is true, and int("²") raises.
        if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= BIGINT:
            ids.setdefault(int(raw))
    return list(ids)


@dataclass
class Risk:
    level: str  # low | medium | high
    reasons: list[str] = field(default_factory=list)
    pii: list[str] = field(default_factory=list)  # "column (tag)"


def assess(req: AccessRequest, pii_by_column: dict[str, list[str]], held: list[str]) -> Risk:
    """The reasons an approver should look twice, and a level from how many weigh."""
    score = 0
    reasons: list[str] = []
    classification = req.dataset.classification
    if classification.rank >= 40:
        score += 2
        reasons.append(f"{classification.name} data")
    elif classification.rank >= 30:
        score += 1
        reasons.append(f"{classification.name} data")
    asked = set(req.covered_columns or [])
    sensitive = [c for c in pii_by_column if not asked or c in asked]  # no columns: the whole table
    pii = [f"{c} ({', '.join(pii_by_column[c])})" for c in sorted(sensitive)]
    if pii:
        score += 2
        reasons.append(f"{len(pii)} sensitive column{'s' if len(pii) != 1 else ''}")
    if req.level != AccessLevel.READ:
        score += 1
        reasons.append(f"{req.get_level_display().lower()} access")
    if req.duration.days > LONG_DAYS:
        score += 1
        reasons.append(req.duration_text)
    if req.jit_credentials:
        score += 1
        reasons.append("a personal database login")
    if len(held) >= 5:
        score += 1
        reasons.append(f"already holds {len(held)} grants")
    level = "high" if score >= 4 else "medium" if score >= 2 else "low"
    return Risk(level=level, reasons=reasons, pii=pii)


def _inbox_items(user: Any, page_number: Any, only: int | None = None) -> tuple[Any, list[dict[str, Any]]]:
    qs = access_requests_awaiting(user).order_by("submitted_at", "pk")
    if only is not None:
        qs = qs.filter(pk=only)
    page = Paginator(qs, PAGE_SIZE).get_page(page_number)
    reqs = list(page)
    pii: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    held: dict[str, list[str]] = defaultdict(list)  # "u<id>" for users, "r<id>" for roles
    if reqs:
        # One query: every sensitive column of these datasets with its own confirmed tags and
        # those it inherits through lineage (a view's column computing from a PII column).
        columns = (
            Column.objects.filter(dataset_id__in={r.dataset_id for r in reqs}, is_present=True)
            .filter(pii_q())
            .annotate(own=ArrayAgg("tags__tag", filter=Q(tags__status=TagStatus.CONFIRMED), distinct=True, default=[]))
            .order_by("dataset_id", "ordinal")
            .values_list("dataset_id", "name", "own", "inherited_tags")
        )
        for dataset_id, column, own, inherited_tags in columns:
            pii[dataset_id][column] = [tag_label(t) for t in sorted(set(own) | set(inherited_tags))]
        users = {r.grantee_user_id for r in reqs if r.grantee_user_id}
        roles = {r.grantee_role_id for r in reqs if r.grantee_role_id}
        # What the grantee already holds, as far as this approver may see (officers: everything;
        # owners: their own datasets): an inbox must not reveal access elsewhere.
        grants = (
            grants_visible_to(user)
            .filter(pk__in=Grant.objects.active(timezone.now()).exclude(status=GrantStatus.FAILED).values("pk"))
            .filter(Q(grantee_user_id__in=users) | Q(grantee_role_id__in=roles))
            .order_by("dataset__schema", "dataset__name")
            .values_list("grantee_user_id", "grantee_role_id", "dataset__schema", "dataset__name", "level")
        )
        for user_id, role_id, schema, name, level in grants:
            held[f"u{user_id}" if user_id else f"r{role_id}"].append(f"{schema}.{name} ({level})")
    now = timezone.now()
    items = []
    for r in reqs:
        mine = held.get(f"u{r.grantee_user_id}" if r.grantee_user_id else f"r{r.grantee_role_id}", [])
        items.append(
            {"req": r, "risk": assess(r, pii.get(r.dataset_id, {}), mine), "held": mine, "age": now - r.submitted_at}
        )
    return page, items


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    page, items = _inbox_items(request.user, request.GET.get("page"))
    return render(request, "portal/inbox.html", {"page": page, "items": items, "nav": "inbox"})


def _decide(request: HttpRequest, pk: int, decision: str, stage: str | None, comment: str) -> str:
    """Run one decision; return what happened in words. Raises DomainError on refusal."""
    if decision == "approve":
        epsilon = parse_epsilon(request.POST.get(f"epsilon_{pk}", ""))
        req = request_services.access_request_approve(
            access_request=pk, approver=request.user, stage=stage, comment=comment, epsilon=epsilon
        )
        if req.state == "approved":
            return f"Request #{pk} approved; access is being provisioned."
        return f"Request #{pk}: your stage is approved; it now waits for the {req.get_current_stage_display().lower()}."
    if decision == "deny":
        request_services.access_request_deny(access_request=pk, approver=request.user, stage=stage, comment=comment)
        return f"Request #{pk} denied."
    raise DomainError("Choose approve or deny.")


@login_required
def inbox_decide(request: HtmxHttpRequest) -> HttpResponse:
    """One decision (the card's buttons) or many (the bulk bar): `ids` with `stage_<id>` each."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    decision = request.POST.get("decision", "")
    comment = request.POST.get("comment", "")
    ids = parse_ids(request.POST.getlist("ids"))
    if not ids:
        messages.error(request, "Select at least one request.")
        return redirect("portal:inbox")
    if len(ids) > MAX_BULK:
        messages.error(request, f"Decide at most {MAX_BULK} requests at a time.")
        return redirect("portal:inbox")
    # Only requests this user may see are passed on: the others are "not found", so the endpoint
    # cannot be used to learn which ids exist, their state or their dataset.
    visible = dict(
        access_requests_visible_to(request.user).filter(pk__in=ids).values_list("pk", "dataset__classification__rank")
    )
    done, refused = [], []
    for pk in ids:
        if pk not in visible:
            refused.append(f"Request #{pk}: not found.")
            continue
        if mfa.needs_second_factor_for(request.user, visible[pk]):
            refused.append(
                f"Request #{pk}: deciding on Confidential or Restricted data needs a sign-in with your "
                "authenticator (set one up under Two-factor, then sign in again)."
            )
            continue
        stage = request.POST.get(f"stage_{pk}") or None
        try:
            done.append(_decide(request, pk, decision, stage, comment))
        except DomainError as exc:
            refused.append(f"Request #{pk}: {exc.message}")
    if request.htmx and len(ids) == 1:
        if refused:  # the card again, with the reason, so the approver can correct and retry
            _, items = _inbox_items(request.user, 1, only=ids[0])
            if items:
                return render(request, "portal/_inbox_card.html", {"it": items[0], "error": refused[0]})
        return render(
            request,
            "portal/_inbox_outcome.html",
            {"pk": ids[0], "done": done[0] if done else "", "refused": refused[0] if refused else ""},
        )
    if len(done) > 1:
        messages.success(request, f"{len(done)} requests {'approved' if decision == 'approve' else 'denied'}.")
    elif done:
        messages.success(request, done[0])
    for line in refused:
        messages.error(request, line)
    return redirect("portal:inbox")
