"""The web portal (server-rendered): the catalog and the dataset page. Reads go through the same
selectors as the admin and the API; writes (requests, decisions) will go through the same services.

Queries per page are pinned in tests/portal: they do not grow with the rows shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from accounts.roles import is_governance_admin, is_security_officer, sees_everything

from .. import durations
from ..api.filters import PortalDatasetFilter
from ..api.views import _pii_columns
from ..errors import DomainError
from ..forms import AccessRequestSubmitForm, access_request_submit_from_form
from ..models import (
    AccessRequest,
    Classification,
    Column,
    ColumnTag,
    DataSource,
    Grant,
    RequestState,
    TagStatus,
    tag_label,
)
from ..selectors.catalog import datasets_approvable_by, datasets_visible_to
from ..selectors.lineage import dataset_lineage
from ..selectors.requests import request_preview_for
from ..selectors.usage import WITH_USAGE, last_use_of
from .stewardship import dataset_stewardship

PAGE_SIZE = 25


@login_required
def catalog(request: HttpRequest) -> HttpResponse:
    """Search and browse: free text, source, classification, sensitive-data tag, owner."""
    qs = (
        datasets_visible_to(request.user)
        .filter(is_present=True)
        .annotate(pii_columns=_pii_columns())
        .order_by("source__name", "schema", "name", "pk")
    )
    filterset = PortalDatasetFilter(request.GET, queryset=qs, request=request)
    page = Paginator(filterset.qs if filterset.is_valid() else qs.none(), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filters": filterset.form,
        "errors": filterset.errors,
        "sources": DataSource.objects.order_by("name").values_list("name", flat=True),
        "classifications": Classification.objects.order_by("rank"),
        "query": query.urlencode(),
        "nav": "catalog",
        "searched": any(request.GET.get(k) for k in ("q", "source", "classification", "tag", "owner", "quality")),
    }
    return render(request, "portal/catalog.html", context)


@login_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """What a dataset is, which columns hold sensitive data, what I have, and (for its owners,
    stewards, officers, admins and auditors) who has access."""
    confirmed = ColumnTag.objects.filter(status=TagStatus.CONFIRMED).order_by("tag")
    columns = (
        Column.objects.filter(is_present=True)
        .order_by("ordinal")
        .prefetch_related(Prefetch("tags", queryset=confirmed, to_attr="confirmed_tags"))
    )
    dataset = get_object_or_404(
        datasets_visible_to(request.user)
        .select_related("declared_classification")
        .prefetch_related(Prefetch("columns", queryset=columns, to_attr="present")),
        pk=pk,
    )
    user = request.user
    me = int(user.pk or 0)
    now = timezone.now()
    mine = Grant.objects.active(now).filter(dataset=dataset, grantee_user_id=me).order_by("ends_at")
    pending = AccessRequest.objects.filter(dataset=dataset, state=RequestState.PENDING, grantee_user_id=me).order_by(
        "-submitted_at"
    )
    everything = sees_everything(user)
    approves = not everything and datasets_approvable_by(user).filter(pk=dataset.pk).exists()
    sees_access = everything or approves
    # Who may move the end of others' access from here: its approvers, officers and admins (auditors
    # see who has access but act on nothing). The page itself asks the service's rules again.
    changes_ends = approves or (everything and (is_security_officer(user) or is_governance_admin(user)))
    holders: list[Any] = []
    if sees_access:
        holders = list(
            Grant.objects.active(now)
            .filter(dataset=dataset)
            .select_related("grantee_user", "grantee_role", "source_request", *WITH_USAGE)
            .order_by("ends_at")
        )
        for holder in holders:
            holder.last_use = last_use_of(holder, now=now)  # read by the template
    lineage = dataset_lineage(dataset)
    columns = dataset.present  # type: ignore[attr-defined]
    for column in columns:
        # Own confirmed tags, then those inherited through lineage with the column they come from.
        column.sensitive = [(t.get_tag_display(), "") for t in column.confirmed_tags] + [
            (tag_label(e["tag"]), e["column"]) for e in column.inherited_from
        ]
    context = {
        **dataset_stewardship(user, dataset, columns),
        "here": request.get_full_path(),
        "dataset": dataset,
        "policy": dataset.classification,
        "declared": dataset.declared_classification,
        "lineage": lineage,
        "because": [u for u in lineage.upstream if u.rank == dataset.classification.rank],
        "columns": columns,
        "pii_count": len([c for c in columns if c.sensitive]),
        "mine": list(mine),
        "pending": list(pending),
        "sees_access": sees_access,
        "changes_ends": changes_ends,
        "holders": list(holders),
        "nav": "catalog",
    }
    return render(request, "portal/dataset.html", context)


@login_required
def request_access(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask for access to one dataset: level, columns, duration within the policy's limit, and the
    reason. The submit service decides (policy, duplicates, separation of duties); its refusals
    come back as errors on the form's fields, and nothing is saved."""
    dataset = get_object_or_404(datasets_visible_to(request.user).filter(is_present=True), pk=pk)
    form = AccessRequestSubmitForm(request.POST or None, initial=_renewal(request, dataset)).for_dataset(dataset)
    form.for_requester(request.user)
    if request.method == "POST" and form.is_valid():
        created = access_request_submit_from_form(form, requester=request.user)
        if created is not None:
            state = created.get_state_display().lower()
            messages.success(request, f"Request #{created.pk} submitted: {state}.")
            return redirect("portal:dataset", pk=dataset.pk)
    policy = dataset.classification
    context = {"dataset": dataset, "policy": policy, "form": form, "nav": "catalog", "renewing": "renew" in request.GET}
    return render(request, "portal/request.html", context)


@login_required
def request_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """What the form as filled in would grant, before submitting (the request form posts here
    through HTMX on every change): the columns covered, the PII left out or included, the stages
    that will decide, and the SQL the portal would run once approved. Nothing is saved."""
    dataset = get_object_or_404(datasets_visible_to(request.user).filter(is_present=True), pk=pk)
    form = AccessRequestSubmitForm(request.POST or None).for_dataset(dataset)
    form.for_requester(request.user)
    context: dict[str, Any] = {"dataset": dataset}
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            context |= request_preview_for(
                requester=request.user,
                dataset=dataset,
                level=data["level"],
                columns=list(data["columns"]),
                grantee_role=data["grantee_role"],
                treatments=form.chosen_treatments(),
                row_filter=data.get("row_filter"),
            )
        except DomainError as exc:
            context["problem"] = exc.message
    else:
        context["problem"] = " ".join(str(e) for errors in form.errors.values() for e in errors) or "Fill in the form."
    return render(request, "portal/_request_preview.html", context)


def _renewal(request: HttpRequest, dataset: Any) -> dict[str, Any]:
    """`?renew=<grant>`: start from what one of my grants on this dataset covered (a new request,
    decided like any other: renewing never extends a grant by itself)."""
    try:
        pk = int(request.GET.get("renew", ""))
    except ValueError:
        return {}
    grant = Grant.objects.filter(pk=pk, dataset=dataset, grantee_user_id=request.user.pk).first()
    if grant is None:
        return {}
    columns = list(dataset.columns.filter(is_present=True, name__in=grant.columns).values_list("pk", flat=True))
    amount, unit = durations.split(grant.ends_at - grant.starts_at)
    return {
        "level": grant.level,
        "columns": columns,
        "justification": grant.reason,
        "duration": amount,
        "duration_unit": unit,
    }
