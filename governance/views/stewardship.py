"""Stewardship in the portal: the "Suggestions" queue (every undecided PII suggestion of the datasets
I own or steward; officers and governance admins: all), the "PII suggestions" section of a dataset
page, and the decisions, one or many at once. Each suggestion says why it was made and what
confirming it would do to classifications, before anyone confirms (selectors.stewardship). Decisions
go through the services, all or nothing (services.stewardship), audited there.

Queries per page are pinned in tests/portal/test_stewardship.py: they do not grow with the rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.roles import sees_everything

from ..api.filters import PortalColumnTagFilter
from ..errors import DomainError
from ..models import Column, ColumnTag, Dataset, DataSource, SensitiveTag, TagStatus, tag_label
from ..selectors.catalog import datasets_stewarded_by
from ..selectors.stewardship import (
    PreviewBasis,
    classification_preview,
    column_tags_visible_to,
    decides_everywhere,
    may_decide,
    reasons,
    suggestions_for,
)
from ..services.stewardship import MAX_BULK, column_tags_decide
from .inbox import parse_ids

PAGE_SIZE = 25
CONFIDENCE_CHOICES = [("", "any"), ("50", "50% or more"), ("80", "80% or more"), ("95", "95% or more")]


def _rows(user: Any, tags: list[ColumnTag]) -> list[dict[str, Any]]:
    """Each suggestion with its reasons, what confirming it alone would change, and whether `user`
    may decide it (a constant number of queries for any number of tags)."""
    if not tags:
        return []
    basis = PreviewBasis(tags)
    everywhere = decides_everywhere(user)
    stewarded: set[int] = set()
    if not everywhere:
        stewarded = set(
            datasets_stewarded_by(user).filter(pk__in={t.column.dataset_id for t in tags}).values_list("pk", flat=True)
        )
    return [
        {
            "tag": t,
            "label": tag_label(t.tag),
            "reasons": reasons(t),
            "preview": basis.preview([t]).sentence(),
            "can_decide": everywhere or t.column.dataset_id in stewarded,
        }
        for t in tags
    ]


@login_required
def suggestions(request: HttpRequest) -> HttpResponse:
    """The queue: filter by source, dataset, tag and confidence; decide one or many."""
    qs = suggestions_for(request.user).order_by(
        "column__dataset__source__name", "column__dataset__schema", "column__dataset__name", "column__ordinal", "pk"
    )
    filterset = PortalColumnTagFilter(request.GET, queryset=qs, request=request)
    page = Paginator(filterset.qs if filterset.is_valid() else qs.none(), PAGE_SIZE).get_page(request.GET.get("page"))
    rows = _rows(request.user, list(page))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "rows": rows,
        "any_decidable": any(r["can_decide"] for r in rows),
        "errors": filterset.errors,
        "values": {k: request.GET.get(k, "") for k in ("source", "dataset", "tag", "min_confidence")},
        "sources": DataSource.objects.order_by("name").values_list("name", flat=True),
        "tags": SensitiveTag.choices,
        "confidences": CONFIDENCE_CHOICES,
        "query": query.urlencode(),
        "here": request.get_full_path(),
        "nav": "suggestions",
    }
    return render(request, "portal/suggestions.html", context)


def _selected(request: HttpRequest) -> tuple[str, list[int]]:
    """The decision and the ids: a row's own button (`row=confirm-12`) or the selection."""
    row = request.POST.get("row", "")
    if row:
        decision, _, raw = row.partition("-")
        return decision, parse_ids([raw])
    return request.POST.get("decision", ""), parse_ids(request.POST.getlist("ids"))


@login_required
def suggestions_preview(request: HttpRequest) -> HttpResponse:
    """What confirming the selected suggestions would change (HTMX, on every change of the
    selection). Tags the user may not see are left out, silently: this only reads."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    ids = parse_ids(request.POST.getlist("ids"))[:MAX_BULK]
    tags = list(column_tags_visible_to(request.user).filter(pk__in=ids)) if ids else []
    return render(request, "portal/_suggestion_preview.html", {"preview": classification_preview(tags), "n": len(tags)})


@login_required
def suggestions_decide(request: HttpRequest) -> HttpResponse:
    """Confirm or reject one suggestion or the selection, all or none; back to where it was asked."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
        target = ""
    back = redirect(target or "portal:suggestions")
    decision, ids = _selected(request)
    if decision not in ("confirm", "reject"):
        messages.error(request, "Choose confirm or reject.")
        return back
    if not ids:
        messages.error(request, "Select at least one suggestion.")
        return back
    if len(ids) > MAX_BULK:
        messages.error(request, f"Decide at most {MAX_BULK} suggestions at a time.")
        return back
    # Only tags this user may see are passed on: the others are "not found", so that the page
    # cannot be used to learn which ids exist.
    visible = {t.pk: t for t in column_tags_visible_to(request.user).filter(pk__in=ids)}
    missing = [pk for pk in ids if pk not in visible]
    if missing:
        messages.error(request, f"Tag #{missing[0]}: not found. Nothing was decided.")
        return back
    tags = [visible[pk] for pk in ids]
    preview = classification_preview(tags) if decision == "confirm" else None
    try:
        column_tags_decide(ids=ids, decision=decision, actor=request.user)
    except DomainError as exc:
        messages.error(request, f"{exc.message} Nothing was decided.")
        return back
    verb = "Confirmed" if decision == "confirm" else "Rejected"
    what = ", ".join(
        f"{tag_label(t.tag)} on {t.column.dataset.schema}.{t.column.dataset.name}.{t.column.name}" for t in tags
    )
    text = f"{verb} {what}."
    if preview is not None and preview.changes_anything:
        changes = [*preview.raised, *preview.views]
        text += " " + "; ".join(f"{c.label} is now {c.after} (was {c.before})" for c in changes) + "."
    messages.success(request, text)
    return back


def dataset_stewardship(user: Any, dataset: Dataset, columns: list[Column]) -> dict[str, Any]:
    """The dataset page's "PII suggestions" section: for those who may decide here, and for those who
    see everything (auditors read it). Empty for everyone else (no queries for them beyond the check)."""
    deciding = may_decide(user, dataset)
    if not (deciding or sees_everything(user)):
        return {"stewardship": False}
    tags = list(
        ColumnTag.objects.filter(column__dataset=dataset, column__is_present=True)
        .select_related("column__dataset", "decided_by")
        .order_by("column__ordinal", "tag")
    )
    suggested = [t for t in tags if t.status == TagStatus.SUGGESTED]
    rows = (
        _rows(user, suggested)
        if deciding
        else [{"tag": t, "label": tag_label(t.tag), "reasons": reasons(t)} for t in suggested]
    )
    inherited = []
    origins = {e.get("column_id") for c in columns for e in c.inherited_from if e.get("column_id")}
    source_of = dict(Column.objects.filter(pk__in=origins).values_list("pk", "dataset_id")) if origins else {}
    for c in columns:
        for e in c.inherited_from:
            inherited.append(
                {
                    "column": c.name,
                    "label": tag_label(e["tag"]),
                    "origin": e["column"],
                    "dataset_id": source_of.get(e.get("column_id")),
                }
            )
    return {
        "stewardship": True,
        "may_decide": deciding,
        "suggestions": rows,
        "decided": [t for t in tags if t.status != TagStatus.SUGGESTED],
        "inherited": inherited,
    }
