"""The effective access report (`/portal/access/`): who holds what on a source right now, with
when each grant was last used, for officers, admins, auditors and the datasets' owners and
stewards; the whole report as CSV (`?format=csv`). docs/usage.md."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from ..errors import NotPermitted
from ..selectors.access_report import CSV_HEADER, report_grants, report_rows, report_sources
from ..selectors.usage import related_or_none

PAGE_SIZE = 50


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
def access_report(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    sources = list(report_sources(request.user))
    if not sources:
        return render(
            request, "portal/forbidden.html", {"nav": "access", "what": "the effective access report"}, status=403
        )
    chosen = request.GET.get("source", "")
    source = next((s for s in sources if s.name == chosen), None) if chosen else sources[0]
    if source is None:
        missing = {"nav": "access", "sources": sources, "unknown": chosen}
        return render(request, "portal/access_report.html", missing, status=404)
    now = timezone.now()
    try:
        grants = report_grants(request.user, source, now=now)
    except NotPermitted:  # a source listed for one of its datasets always has one: a race at most
        return render(request, "portal/forbidden.html", {"nav": "access", "what": "this report"}, status=403)
    if request.GET.get("format") == "csv":
        return _csv(source.name, report_rows(grants.iterator(chunk_size=500), now=now))
    page = Paginator(grants, PAGE_SIZE).get_page(request.GET.get("page"))
    context: dict[str, Any] = {
        "nav": "access",
        "sources": sources,
        "source": source,
        "state": related_or_none(source, "usage"),
        "page": page,
        "rows": list(report_rows(page.object_list, now=now)),
        "query": f"source={source.name}",
    }
    return render(request, "portal/access_report.html", context)


def _csv(name: str, rows: Iterator[Any]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(CSV_HEADER)
        for row in rows:
            yield writer.writerow(row.csv())

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="effective-access-{name}-{stamp}.csv"'
    return response
