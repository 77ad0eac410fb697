"""The portal's data-subject request pages for privacy officers (docs/subjects.md): the list (state,
kind, deadline, overdue marked), the form that records a request, and a request's page with its
preview per dataset, outcomes and actions (preview, approve, extend, execute, the export once).

Who sees what is the selectors' (requests_visible_to): privacy officers act, security officers,
governance admins and auditors read, anybody else gets 404 for every page here (that someone asked
is itself personal data). Every action calls the same service as the API; refusals show as
messages or on the field they name. The subject's identifier values are typed on the create form
and shown nowhere, ever: pages name the kinds only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from governance.errors import DomainError

from .forms import ExtendForm, RequestCreateForm
from .models import RequestKind, RequestState, SubjectRequest
from .permissions import handles_subject_requests
from .selectors import OPEN, datasets_of, export_waiting, may_see_requests, request_for, requests_visible_to
from .services import execution, requests
from .services.self_service import message_of

PAGE_SIZE = 50
STATE_FILTERS = {"open": "Open", **dict(RequestState.choices), "overdue": "Overdue"}


def _reader(request: HttpRequest) -> None:
    if not may_see_requests(request.user):
        raise Http404


def _request_or_404(request: HttpRequest, pk: int) -> SubjectRequest:
    found = request_for(request.user, pk)
    if found is None:
        raise Http404
    return found


@login_required
def request_list(request: HttpRequest) -> HttpResponse:
    _reader(request)
    now = timezone.now()
    state = request.GET.get("state", "")
    qs = requests_visible_to(request.user).order_by("due_at", "pk")
    if state == "open":
        qs = qs.filter(state__in=OPEN)
    elif state == "overdue":
        qs = qs.filter(state__in=OPEN, due_at__lt=now)
    elif state in RequestState.values:
        qs = qs.filter(state=state)
    else:
        state = ""
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "nav": "subjects",
        "page": page,
        "now": now,
        "state": state,
        "states": STATE_FILTERS.items(),
        "state_query": f"state={state}" if state else "",
        "may_act": handles_subject_requests(request.user),
    }
    return render(request, "subjects/list.html", context)


@login_required
def request_create(request: HttpRequest) -> HttpResponse:
    _reader(request)
    if not handles_subject_requests(request.user):
        who = "privacy officers"
        return render(
            request, "portal/forbidden.html", {"nav": "subjects", "what": "recording a request", "who": who}, status=403
        )
    form = RequestCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            made = requests.subject_request_create(
                actor=request.user,
                kind=form.cleaned_data["kind"],
                identifiers=form.cleaned_data["identifiers"],
                reference=form.cleaned_data["reference"],
            )
        except DomainError as exc:
            field = (
                exc.field
                if exc.field in form.fields
                else ("identifier_value_0" if exc.field == "identifiers" else None)
            )
            form.add_error(field, exc.message)
        else:
            messages.success(
                request, f"Request #{made.pk} is recorded. Preview it to see where the subject's rows are."
            )
            return redirect("subjects:request", pk=made.pk)
    response = render(
        request, "subjects/create.html", {"nav": "subjects", "form": form}, status=400 if form.errors else 200
    )
    return response


def _actions(user: Any, subject: SubjectRequest) -> dict[str, Any]:
    """What the page offers `user` on `subject`, and why not where it helps (approval)."""
    acts = handles_subject_requests(user)
    executable = subject.kind in (RequestKind.ERASURE, RequestKind.ACCESS)
    export: dict[str, Any] = {"shown": False}
    if subject.kind == RequestKind.ACCESS and subject.state == RequestState.DONE:
        holder = execution.export_holder_id(subject) == user.pk
        export = {"shown": True, "holder": holder, "waiting": export_waiting(subject)}
    return {
        "acts": acts,
        "preview": acts and subject.state in requests.PREVIEWABLE,
        "approve": acts and subject.state == RequestState.PREVIEWED,
        "approve_refusal": requests.approval_refusal(user, subject) if acts else "",
        "extend": acts and subject.extended_at is None and subject.state != RequestState.DONE,
        "execute": acts and executable and subject.state == RequestState.APPROVED,
        "carried_by_owners": not executable,
        "export": export,
    }


@login_required
@never_cache
def request_detail(request: HttpRequest, pk: int, extend_form: ExtendForm | None = None) -> HttpResponse:
    subject = _request_or_404(request, pk)
    acts = handles_subject_requests(request.user)
    context = {
        "nav": "subjects",
        "r": subject,
        "datasets": list(datasets_of(subject)),
        "now": timezone.now(),
        "overdue": subject.overdue(),
        "message": message_of(subject) if acts and subject.self_service else "",
        "extend_form": extend_form or ExtendForm(),
        **_actions(request.user, subject),
    }
    return render(request, "subjects/detail.html", context, status=400 if extend_form is not None else 200)


def _act(request: HttpRequest, pk: int, call: Any, done: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    subject = _request_or_404(request, pk)
    try:
        call(subject)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("subjects:request", pk=subject.pk)


@login_required
def request_preview(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        lambda s: requests.subject_request_preview(actor=request.user, request=s),
        "Previewed: the subject's rows per dataset are below. Another privacy officer approves.",
    )


@login_required
def request_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        lambda s: requests.subject_request_approve(actor=request.user, request=s),
        "Approved: it can be executed now.",
    )


@login_required
def request_execute(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        lambda s: requests.subject_request_execute_later(actor=request.user, request=s),
        "Execution requested: a worker carries it out. Reload this page to see each dataset's outcome.",
    )


@login_required
def request_extend(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    subject = _request_or_404(request, pk)
    form = ExtendForm(request.POST)
    if form.is_valid():
        try:
            done = requests.subject_request_extend(
                actor=request.user, request=subject, reason=form.cleaned_data["reason"]
            )
        except DomainError as exc:
            form.add_error("reason" if exc.field == "reason" else None, exc.message)
        else:
            messages.success(request, f"The deadline is now {done.due_at:%Y-%m-%d}.")
            return redirect("subjects:request", pk=subject.pk)
    return request_detail(request, pk, extend_form=form)


@login_required
@never_cache
def request_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The access export's one download (POST: a link prefetched by a browser or a mail scanner
    must not spend it)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    subject = _request_or_404(request, pk)
    try:
        payload = execution.subject_export_download(actor=request.user, request=subject)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("subjects:request", pk=subject.pk)
    response = HttpResponse(payload, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="subject-request-{subject.pk}.zip"'
    return response
