"""Reads for stewardship: the PII suggestions a person may review, why each was made, and what
confirming them would do to classifications before anyone confirms (a preview: no writes).

Who sees which tags: owners and stewards (the `steward_dataset` object permission) those of their
datasets; security officers, governance admins and auditors all of them (auditors read, never decide).
Who may decide is the services' question (governance.services.catalog._decide_tag); `may_decide`
answers it for showing buttons, with the same rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from accounts.roles import sees_everything

from ..models import Classification, ColumnTag, Dataset, DatasetDependency, TagStatus, tag_label
from ..policy import MINIMUM_CLASSIFICATION_FOR_TAG, decides_tags_everywhere, may_decide_tags
from .catalog import datasets_stewarded_by
from .lineage import downstream_of, order_upstream_first

# One rule for the services and the pages (governance.policy).
decides_everywhere = decides_tags_everywhere
may_decide = may_decide_tags


def column_tags_visible_to(user: Any) -> QuerySet[ColumnTag]:
    """Tags of present columns of the datasets `user` stewards (everyone's for those who see everything)."""
    qs = ColumnTag.objects.filter(column__is_present=True, column__dataset__is_present=True).select_related(
        "column__dataset__source", "column__dataset__classification", "decided_by"
    )
    if sees_everything(user) or decides_everywhere(user):
        return qs
    return qs.filter(column__dataset__in=datasets_stewarded_by(user).values("pk"))


def suggestions_for(user: Any) -> QuerySet[ColumnTag]:
    """The undecided suggestions `user` may review, oldest dataset first."""
    return column_tags_visible_to(user).filter(status=TagStatus.SUGGESTED)


def reasons(tag: ColumnTag) -> list[str]:
    """Why discovery suggested the tag, in words: one line per finding (detector, what matched,
    the shape), never a value. Falls back to the free-text evidence of older suggestions."""
    lines = []
    for finding in tag.findings or []:
        if not isinstance(finding, dict):
            continue
        detector = str(finding.get("detector") or "discovery")
        shape = str(finding.get("shape") or "")
        if finding.get("basis") == "values":
            sampled = int(finding.get("sampled") or 0)
            matched = int(finding.get("matched") or 0)
            share = finding.get("share")
            if share is None:
                share = matched / sampled if sampled else 0
            percent = int(float(share) * 100 + 0.5)
            what, verb = f"{percent}% of {sampled} sampled values", "match"
        else:
            what, verb = "the column's name", "matches"
        lines.append(f"{detector}: {what}" + (f" {verb} {shape}" if shape else ""))
    if not lines and tag.evidence:
        lines.append(tag.evidence)
    return lines


# --- the preview of classification changes ---------------------------------------------------------


@dataclass(frozen=True)
class Change:
    dataset_id: int
    label: str  # schema.name
    before: str
    after: str


@dataclass
class Preview:
    """What confirming a set of tags would do: the datasets whose own classification rises, and the
    views (transitively) whose effective classification rises with them."""

    confirming: list[str] = field(default_factory=list)  # "Email address on sales.customers.email"
    raised: list[Change] = field(default_factory=list)
    views: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # datasets already at the level asked for

    @property
    def changes_anything(self) -> bool:
        return bool(self.raised or self.views)

    def sentence(self) -> str:
        if not self.confirming:
            return "Nothing to confirm: rejecting changes no classification."
        what = self.confirming[0] if len(self.confirming) == 1 else f"{len(self.confirming)} suggestions"
        if not self.changes_anything:
            already = ", ".join(self.unchanged)
            return f"Confirming {what} changes no classification" + (
                f" ({already} already {'is' if len(self.unchanged) == 1 else 'are'} at least that strict)."
                if already
                else "."
            )
        parts = [f"{c.label} from {c.before} to {c.after}" for c in self.raised]
        text = f"Confirming {what} raises {' and '.join(parts) if parts else 'no dataset of its own'}"
        if self.views:
            listed = ", ".join(f"{c.label} ({c.before} → {c.after})" for c in self.views)
            n = len(self.views)
            who = "1 view that reads it rises" if n == 1 else f"{n} views that read it rise"
            text += f"; {who} too: {listed}"
        return text + "."


class PreviewBasis:
    """Everything a preview needs, loaded in a constant number of queries for any number of tags:
    the classifications, what lies downstream of the tags' datasets, the edges between them and
    their current classifications. Previews of single tags and of selections are computed from it."""

    def __init__(self, tags: Iterable[ColumnTag]) -> None:
        self.tags = list(tags)
        classes = list(Classification.objects.all())
        self.rank = {c.pk: c.rank for c in classes}
        self.name = {c.pk: c.name for c in classes}
        self.by_slug = {c.slug: c.pk for c in classes}
        roots = {t.column.dataset_id for t in self.tags}
        self.affected = downstream_of(roots) if roots else set()
        self.upstream: dict[int, set[int]] = defaultdict(set)
        if self.affected:
            for dataset_id, upstream_id in DatasetDependency.objects.filter(dataset_id__in=self.affected).values_list(
                "dataset_id", "upstream_id"
            ):
                self.upstream[dataset_id].add(upstream_id)
        involved = self.affected | {u for ups in self.upstream.values() for u in ups}
        self.rows = {
            pk: (declared, effective, f"{schema}.{name}")
            for pk, declared, effective, schema, name in Dataset.objects.filter(pk__in=involved).values_list(
                "pk", "declared_classification_id", "classification_id", "schema", "name"
            )
        }
        self.order = order_upstream_first(self.affected, self.upstream)

    def preview(self, tags: Iterable[ColumnTag]) -> Preview:
        out = Preview()
        floor: dict[int, int] = {}  # dataset -> the classification its confirmed tags ask for
        for tag in tags:
            if tag.status == TagStatus.CONFIRMED:
                continue
            dataset = tag.column.dataset
            out.confirming.append(f"{tag_label(tag.tag)} on {dataset.schema}.{dataset.name}.{tag.column.name}")
            wanted = self.by_slug.get(MINIMUM_CLASSIFICATION_FOR_TAG.get(tag.tag, ""))
            if wanted is None:
                continue
            current = floor.get(dataset.pk)
            if current is None or self.rank[wanted] > self.rank[current]:
                floor[dataset.pk] = wanted
        declared = {pk: row[0] for pk, row in self.rows.items()}
        for pk, wanted in sorted(floor.items()):
            if pk not in self.rows:
                continue
            if self.rank[wanted] > self.rank[declared[pk]]:
                declared[pk] = wanted
            else:
                out.unchanged.append(self.rows[pk][2])
        effective = {pk: row[1] for pk, row in self.rows.items()}
        for pk in self.order:
            best = declared[pk]
            for up in self.upstream.get(pk, ()):
                if up in effective and self.rank[effective[up]] > self.rank[best]:
                    best = effective[up]
            effective[pk] = best
        for pk in sorted(self.affected, key=lambda p: self.rows[p][2]):
            before = self.rows[pk][1]
            if self.rank[effective[pk]] <= self.rank[before]:
                continue
            change = Change(pk, self.rows[pk][2], self.name[before], self.name[effective[pk]])
            (out.raised if pk in floor else out.views).append(change)
        return out


def classification_preview(tags: Iterable[ColumnTag]) -> Preview:
    """What confirming `tags` together would do (tags need `column__dataset` loaded)."""
    tags = list(tags)
    return PreviewBasis(tags).preview(tags)
