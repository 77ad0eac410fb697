"""My access: the requests I made (each with a timeline of approvals and provisioning, refreshed by
HTMX while something is still moving) and the grants I hold (renew, relinquish, and the one-time
reveal of a temporary database login's password)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django_htmx.middleware import HtmxDetails

from accounts import mfa

from .. import durations
from ..errors import DomainError
from ..forms import GrantEndForm
from ..models import (
    AccessRequest,
    Approval,
    ApprovalStage,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RequestState,
    RoleMembership,
)
from ..policy import classification_policy
from ..selectors.plans import plan_preview
from ..selectors.requests import access_requests_visible_to
from ..selectors.usage import WITH_USAGE, last_use_of
from ..services import grants as grant_services
from ..services import requests as request_services
from ..services.grant_ends import grant_end_change
from ..services.jit import grant_jit_credentials_reveal, jit_psql_command

PAGE_SIZE = 20


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@dataclass
class Step:
    """One line of a request's timeline."""

    at: dt.datetime | None
    title: str
    detail: str = ""
    state: str = "done"  # done | current | waiting | failed


def _in_motion(req: AccessRequest, grant: Grant | None, jobs: list[ProvisioningJob]) -> bool:
    """Something will still change without anyone acting: the page keeps refreshing itself."""
    if grant is None:
        return False
    return any(j.status in (JobStatus.QUEUED, JobStatus.RUNNING) for j in jobs)


def timeline(req: AccessRequest, grant: Grant | None, jobs: list[ProvisioningJob]) -> list[Step]:
    steps = [Step(req.submitted_at, f"Submitted by {req.requester.username}", req.justification)]
    decided = {a.stage: a for a in req.approvals.all()}  # prefetched
    for stage in req.required_stages:
        label = ApprovalStage(stage).label if stage in ApprovalStage.values else stage
        a = decided.get(stage)
        if a is not None:
            verb = "approved" if a.decision == "approved" else "denied"
            steps.append(
                Step(
                    a.decided_at,
                    f"{label}: {verb} by {a.approver.username}",
                    a.comment,
                    "done" if verb == "approved" else "failed",
                )
            )
        elif req.state == RequestState.PENDING:
            current = stage == req.current_stage
            steps.append(
                Step(
                    None,
                    f"{label}: {'waiting for a decision' if current else 'not yet'}",
                    "",
                    "current" if current else "waiting",
                )
            )
    if not req.required_stages and req.state == RequestState.APPROVED:
        steps.append(Step(req.decided_at, "Approved automatically by the policy"))
    if req.state == RequestState.DENIED and any(a.decision != "approved" for a in decided.values()):
        pass  # the denying stage above already says who denied and why
    elif req.state in (RequestState.DENIED, RequestState.CANCELLED, RequestState.EXPIRED):
        words: dict[str, str] = {
            RequestState.DENIED: "Denied",
            RequestState.CANCELLED: "Cancelled",
            RequestState.EXPIRED: "Expired unanswered",
        }
        steps.append(Step(req.decided_at, words[req.state], req.decision_reason, "failed"))
    if grant is not None:
        for job in jobs:
            what = "Provisioning" if job.action == JobAction.APPLY else "Removing the privileges"
            if job.action == JobAction.REVOKE and job.status == JobStatus.SUCCEEDED:
                steps.append(Step(job.finished_at, "Privileges removed from the database"))
            elif job.status == JobStatus.SUCCEEDED:
                steps.append(Step(job.finished_at, f"{what}: done, verified on the database"))
            elif job.status == JobStatus.FAILED:
                steps.append(Step(job.finished_at, f"{what} failed", job.last_error, "failed"))
            elif job.waiting_since is not None:
                # The source does not answer: the job resumes by itself when it does.
                what = f"{what}: waiting for the database to answer again"
                steps.append(Step(job.waiting_since, what, job.last_error, "current"))
            else:
                retry = f" (attempt {job.attempts + 1})" if job.attempts else ""
                steps.append(
                    Step(job.started_at or job.queued_at, f"{what}: in progress{retry}", job.last_error, "current")
                )
        if grant.status == GrantStatus.APPROVED and not jobs:
            steps.append(Step(grant.starts_at, "Approved: applied by the data source's team, not by the portal"))
        if grant.status == GrantStatus.ACTIVE:
            steps.append(Step(grant.verified_at or grant.starts_at, f"Active until {grant.ends_at:%Y-%m-%d %H:%M}"))
        elif grant.status == GrantStatus.REVOKED:
            by = grant.revoked_by.username if grant.revoked_by else "the portal"
            steps.append(Step(grant.revoked_at, f"Revoked by {by}", grant.revoke_reason, "failed"))
        elif grant.status == GrantStatus.EXPIRED:
            steps.append(Step(grant.ends_at, "Expired"))
    return steps


def _status(req: AccessRequest, grant: Grant | None) -> tuple[str, str]:
    """(css class, words) for a request's badge."""
    if grant is not None and grant.status == GrantStatus.APPROVED and not req.dataset.source.provisions:
        return ("ok", "Approved (not provisioned by the portal)")
    if grant is not None:
        by_grant: dict[str, tuple[str, str]] = {
            GrantStatus.APPROVED: ("progress", "Provisioning"),
            GrantStatus.ACTIVE: ("ok", "Active"),
            GrantStatus.FAILED: ("bad", "Provisioning failed"),
            GrantStatus.REVOKED: ("muted", "Revoked"),
            GrantStatus.EXPIRED: ("muted", "Expired"),
        }
        return by_grant.get(grant.status, ("muted", grant.get_status_display()))
    by_state: dict[str, tuple[str, str]] = {
        RequestState.PENDING: ("wait", f"Waiting for {req.get_current_stage_display().lower()}"),
        RequestState.DENIED: ("bad", "Denied"),
        RequestState.CANCELLED: ("muted", "Cancelled"),
        RequestState.EXPIRED: ("muted", "Expired"),
    }
    return by_state.get(req.state, ("muted", req.get_state_display()))


def _my_requests(user: Any) -> Any:
    return AccessRequest.objects.filter(Q(requester=user) | Q(grantee_user=user)).select_related(
        "dataset__source", "dataset__classification", "grantee_role", "grantee_user", "grant"
    )


@login_required
def my_requests(request: HttpRequest) -> HttpResponse:
    qs = _my_requests(request.user).order_by("-submitted_at", "-pk")
    state = request.GET.get("state", "")
    if state in RequestState.values:
        qs = qs.filter(state=state)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = []
    for req in page:
        grant = getattr(req, "grant", None)
        css, words = _status(req, grant)
        rows.append({"req": req, "grant": grant, "css": css, "words": words})
    query = f"state={state}" if state in RequestState.values else ""
    context = {
        "page": page,
        "rows": rows,
        "state": state,
        "states": RequestState.choices,
        "query": query,
        "nav": "requests",
    }
    return render(request, "portal/my_requests.html", context)


def _request_context(request: HttpRequest, pk: int) -> dict[str, Any]:
    approvals = Approval.objects.select_related("approver").order_by("decided_at")
    req = get_object_or_404(
        access_requests_visible_to(request.user).prefetch_related(Prefetch("approvals", queryset=approvals)),
        pk=pk,
    )
    grant = Grant.objects.filter(source_request=req).select_related("revoked_by").first()
    jobs = (
        list(grant.jobs.filter(action__in=[JobAction.APPLY, JobAction.REVOKE]).order_by("queued_at", "pk"))
        if grant
        else []
    )
    css, words = _status(req, grant)
    plan: list[str] = []
    if req.state == RequestState.PENDING:
        plan = plan_preview(req)
    return {
        "req": req,
        "grant": grant,
        "steps": timeline(req, grant, jobs),
        "css": css,
        "words": words,
        "moving": _in_motion(req, grant, jobs),
        "plan": plan,
        "mine": req.requester_id == request.user.pk,
        "nav": "requests",
    }


@login_required
def request_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    context = _request_context(request, pk)
    if request.htmx:  # the self-refreshing status block only
        return render(request, "portal/_request_status.html", context)
    return render(request, "portal/request_detail.html", context)


@login_required
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    req = get_object_or_404(access_requests_visible_to(request.user), pk=pk)
    try:
        request_services.access_request_cancel(
            access_request=req, actor=request.user, reason=request.POST.get("reason", "")
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Request #{req.pk} cancelled.")
    return redirect("portal:request_detail", pk=req.pk)


@login_required
def my_grants(request: HttpRequest) -> HttpResponse:
    """Grants I hold directly, grants of roles I am a member of, and what ended in the last 30 days."""
    now = timezone.now()
    user = request.user.pk
    base = Grant.objects.select_related(
        "dataset__source", "dataset__classification", "grantee_role", "source_request", *WITH_USAGE
    )
    direct = list(base.filter(grantee_user_id=user, revoked_at__isnull=True, ends_at__gt=now).order_by("ends_at"))
    for grant in direct:
        grant.last_use = last_use_of(grant, now=now)  # type: ignore[attr-defined]  # read by the template
    memberships = list(
        RoleMembership.objects.active(now).filter(user_id=user or 0).select_related("role").order_by("role__name")
    )
    via_roles = (
        list(base.active(now).filter(grantee_role__in=[m.role_id for m in memberships]).order_by("ends_at"))
        if memberships
        else []
    )
    ended = list(
        base.filter(grantee_user_id=user)
        .filter(
            Q(revoked_at__gte=now - dt.timedelta(days=30))
            | Q(revoked_at__isnull=True, ends_at__lte=now, ends_at__gte=now - dt.timedelta(days=30))
        )
        .order_by("-ends_at")[:20]
    )
    soon = now + dt.timedelta(days=7)
    context = {
        "direct": direct,
        "memberships": memberships,
        "via_roles": via_roles,
        "ended": ended,
        "soon": soon,
        "now": now,
        "nav": "grants",
    }
    return render(request, "portal/my_grants.html", context)


@login_required
def grant_relinquish(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    grant = get_object_or_404(Grant.objects.filter(grantee_user_id=request.user.pk), pk=pk)
    reason = request.POST.get("reason", "").strip() or "No longer needed (relinquished by the grantee)."
    try:
        grant_services.grant_revoke(grant=grant, actor=request.user, reason=reason)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"You gave up your access to {grant.dataset.qualified_name}; it is being removed.")
    return redirect("portal:grants")


@login_required
def grant_end(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the end of a grant in force: earlier (the grantee, or whoever may revoke it), later (an
    approval of more time, governance.services.grant_ends). Anyone else: not found."""
    grant = get_object_or_404(
        Grant.objects.select_related(
            "dataset__source", "dataset__classification", "grantee_user", "grantee_role", "source_request"
        ),
        pk=pk,
    )
    if not grant_services.may_revoke(request.user, grant):
        raise Http404
    form = GrantEndForm(request.POST or None, initial={"ends_at": timezone.localtime(grant.ends_at)})
    if request.method == "POST" and form.is_valid():
        try:
            data = form.cleaned_data
            moved = grant_end_change(grant=grant, ends_at=data["ends_at"], actor=request.user, reason=data["reason"])
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            new_end = timezone.localtime(moved.ends_at)
            messages.success(request, f"Access to {grant.dataset.qualified_name} now ends {new_end:%Y-%m-%d %H:%M}.")
            if grant.grantee_user_id == request.user.pk:
                return redirect("portal:grants")
            return redirect("portal:dataset", pk=grant.dataset_id)
    longest = classification_policy(grant.dataset.classification).max_duration
    context = {
        "grant": grant,
        "form": form,
        "latest_end": grant.starts_at + longest,
        "longest": durations.words(longest),
        "time_zone": timezone.get_current_timezone_name(),
        "nav": "grants",
    }
    return render(request, "portal/grant_end.html", context)


@never_cache
@login_required
def grant_reveal(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what revealing means. POST: the password, in this response only (never in a message,
    a log or the session); the service allows it once, to the grantee, while the grant is active."""
    grant = get_object_or_404(
        Grant.objects.select_related("dataset__source").filter(grantee_user_id=request.user.pk), pk=pk
    )
    context: dict[str, Any] = {"grant": grant, "nav": "grants"}
    if request.method == "POST" and mfa.required() and not mfa.is_verified(request.user):
        context["error"] = (
            "Revealing a database password needs a sign-in with your authenticator "
            "(set one up under Two-factor, then sign in again)."
        )
    elif request.method == "POST":
        try:
            context["password"] = grant_jit_credentials_reveal(grant=grant, actor=request.user)
        except DomainError as exc:
            context["error"] = exc.message
        else:
            grant.refresh_from_db()
            context["command"] = jit_psql_command(grant)
    return render(request, "portal/grant_reveal.html", context)
