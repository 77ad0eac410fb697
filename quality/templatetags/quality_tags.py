"""Quality where decisions are made: the dataset page's section, and a badge for the catalog, the
request form and the approver's inbox card. Governance's pages load these tags; governance's Python
never imports the quality app (layering: quality builds on governance).

Lists prefetch their badges once (`{% quality_prefetch rows "dataset_id" %}`: one query for the page,
the states with their checks and open integrity findings counted, kept on the request), so a badge per
row costs no query; a badge without a prefetch (one card re-rendered by htmx) reads its own dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template

from ..selectors import Summary, dataset_quality, failing_datasets, summaries

register = template.Library()


def _cache(context: template.Context) -> dict[int, Summary]:
    holder: Any = context.get("request") or context.render_context
    cache: dict[int, Summary] | None = getattr(holder, "_quality_badges", None)
    if cache is None:
        cache = {}
        holder._quality_badges = cache
    return cache


def _path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


@register.simple_tag(takes_context=True)
def quality_prefetch(context: template.Context, rows: Iterable[Any], path: str = "pk") -> str:
    ids = [int(i) for i in (_path(row, path) for row in rows) if i is not None]
    cache = _cache(context)
    missing = [i for i in ids if i not in cache]
    if missing:
        cache.update(summaries(missing))
    return ""


@register.inclusion_tag("quality/_badge.html", takes_context=True)
def quality_badge(context: template.Context, dataset_id: int, link: bool = True) -> dict[str, Any]:
    cache = _cache(context)
    if dataset_id not in cache:
        cache.update(summaries([int(dataset_id)]))
    return {"summary": cache[dataset_id], "dataset_id": dataset_id, "link": link}


@register.inclusion_tag("quality/_dataset_section.html", takes_context=True)
def quality_section(context: template.Context, dataset: Any) -> dict[str, Any]:
    request = context.get("request")
    view = dataset_quality(dataset, getattr(request, "user", None))
    return {
        "dataset": dataset,
        "q": view,
        "bars": _bars(view.trend),
        "width": 20 * max(len(view.trend), 1),
        "request": request,
        "csrf_token": context.get("csrf_token"),
    }


def _bars(runs: list[Any]) -> list[dict[str, Any]]:
    """One bar per run, oldest first: its height the share of checks failing (a run with no failure
    shows a thin green bar, one that could not measure a full amber one)."""
    bars = []
    for i, run in enumerate(runs):
        measured, failing = getattr(run, "measured", 0), getattr(run, "failing", 0)
        share = failing / measured if measured else (1.0 if run.status == "error" else 0.0)
        height = max(4, round(36 * share)) if run.status != "error" else 36
        bars.append({"x": 20 * i + 2, "y": 40 - height, "height": height, "status": run.status, "run": run})
    return bars


@register.inclusion_tag("quality/_failing_datasets.html")
def quality_failing_datasets() -> dict[str, Any]:
    """The dashboard's card: the datasets whose checks fail, most failing first."""
    return {"failing": list(failing_datasets())}
