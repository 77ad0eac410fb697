"""PII tags in the catalog sync: which columns discovery looks at again, and what it does with what it finds.

Every sync re-evaluates (samples again and runs `pii.suggest_tags` on) every column that is new,
retyped or back, every column with a suggestion still undecided, and every column whose rejection
could be reopened by its values (below). A column with no tag at all is evaluated again once
`PII_RESAMPLE_UNTAGGED_SECONDS` (a day by default; 0 = every sync) have passed since discovery
last evaluated it (`Column.pii_evaluated_at`): looking for PII nobody has suggested yet is worth a
daily sample, not one per scheduled sync of a large warehouse. Then, per column:

- **Confirmed** tags are never touched.
- **Suggested** (undecided) tags the detectors still make get the new confidence, evidence and
  findings (a write only when one of them changed; `evaluated_at` moves for all of them in one
  statement). Suggestions the detectors no longer make are **withdrawn**: deleted, counted in the
  sync result and named in its audit event. Nobody decided them, so nothing is lost.
- **Rejected** tags stay rejected unless the data changed kind, which means exactly one of:

  1. *the column's kind of type changed* (`integer` to `text`, not `text` to `varchar(200)`) and the
     detectors make the suggestion again; not on S3 prefixes, whose types are inferred from the
     sampled rows and change with the sample (sync.py);
  2. *a new basis*: the rejection was made when no value finding reached the threshold (the
     suggestion rested on the column's name, or on too few matching values), and now at least
     `threshold` of the sampled values match a detector of that tag.

  A rejection whose findings are unknown (made before findings were recorded) is reopened only by
  a type change. A reopened tag goes back to *suggested*, with a finding saying why it is back, and
  the sync writes one `column_tag.reopened` audit event per tag that keeps the old decision (who
  rejected it, when, on which findings).

- A column that should have been sampled but was not (its relation could not be read, sampling is
  off) is judged by what discovery can still see, adding suggestions only: nothing is withdrawn or
  reopened on missing evidence.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from governance.models import Column, ColumnTag, TagStatus

from . import pii
from .introspect import ColumnInfo

VALUES = "values"


# Type names of S3 samples (s3_sample: inferred kinds and Arrow's types) that pii.value_kind does not know.
_KIND_OF_NAME = {"number": pii.NUMBER, "string": pii.TEXT, "large_string": pii.TEXT, "bool": pii.BOOLEAN}


def kind_of(data_type: str, type_category: str = "") -> str:
    """What a column can hold (text, number, date...), whatever store named its type."""
    base = data_type.split("[")[0].split("(")[0].strip().lower()
    if base in _KIND_OF_NAME:
        return _KIND_OF_NAME[base]
    if base.startswith(("int", "uint", "float", "double", "decimal")):
        return pii.NUMBER
    if base.startswith(("date", "timestamp")):
        return pii.DATE
    return pii.value_kind(data_type, type_category)


def threshold() -> float:
    # Optional setting: the share of sampled values a value detector needs (default 60%).
    return float(getattr(settings, "PII_MATCH_THRESHOLD", pii.DEFAULT_THRESHOLD))


def findings_of(suggestion: pii.Suggestion) -> list[dict[str, Any]]:
    return [f.as_dict() for f in getattr(suggestion, "findings", ()) or ()]


def values_basis(findings: Sequence[dict[str, Any]], at_least: float) -> bool:
    """Whether a value detector matched at least `at_least` of the sample, per these findings."""
    return any(
        f.get("basis") == VALUES and f.get("detector") != "reopened" and float(f.get("share") or 0) >= at_least
        for f in findings
    )


def reopenable_by_values(tag: ColumnTag | dict[str, Any], at_least: float) -> bool:
    """A rejection made with known findings, none of them values at or above the threshold."""
    findings = tag["findings"] if isinstance(tag, dict) else tag.findings
    return bool(findings) and not values_basis(findings, at_least)


@dataclass
class TagChanges:
    """What discovery did to the tags in one sync."""

    suggested: int = 0
    updated: int = 0
    withdrawn: list[dict[str, Any]] = field(default_factory=list)  # {"column", "tag", "confidence"}
    reopened: list[tuple[ColumnTag, dict[str, Any]]] = field(default_factory=list)  # (tag, old decision)
    evaluated: int = 0


@dataclass
class Discovery:
    """One column to (re-)evaluate: where it is, how it reads now, what it was typed as before."""

    column: Column
    info: ColumnInfo
    key: tuple[str, str]
    qualified: str
    retyped_from: str | None = None  # the previous type, when the kind of type changed
    sampleable: bool = True  # values are expected: their absence means "could not look"


def resample_untagged_seconds() -> int:
    # Optional setting: how long an untagged column goes without being sampled again (0 = every sync).
    return int(getattr(settings, "PII_RESAMPLE_UNTAGGED_SECONDS", 86_400))


def untagged_due(evaluated_at: dt.datetime | None, now: dt.datetime, every: int) -> bool:
    """Whether an untagged column last evaluated at `evaluated_at` is due for another look."""
    return every <= 0 or evaluated_at is None or now - evaluated_at >= dt.timedelta(seconds=every)


def needs_discovery(
    info: ColumnInfo,
    data_type: str | None,
    present: bool,
    tags: dict[str, tuple[str, Any]],
    at_least: float,
    due: bool = True,
) -> bool:
    """Whether this sync should evaluate the column (see the module doc). `tags`: tag -> (status,
    findings); `due`: an untagged column's interval has passed (`untagged_due`)."""
    if data_type is None or data_type != info.data_type or not present:
        return True
    if not tags:
        return due
    return any(
        status == TagStatus.SUGGESTED
        or (status == TagStatus.REJECTED and bool(findings) and not values_basis(findings, at_least))
        for status, findings in tags.values()
    )


def _reopen_finding(why: str, basis: str) -> dict[str, Any]:
    return {"detector": "reopened", "basis": basis, "shape": why, "matched": 0, "sampled": 0, "share": 0.0}


def _reopened_finding(tag: ColumnTag) -> dict[str, Any] | None:
    """The leading `reopened` finding of an undecided tag that a sync reopened, if any."""
    first = tag.findings[0] if isinstance(tag.findings, list) and tag.findings else None
    return first if isinstance(first, dict) and first.get("detector") == "reopened" else None


def _reopen_reason(
    tag: ColumnTag, suggestion: pii.Suggestion, item: Discovery, at_least: float
) -> dict[str, Any] | None:
    if item.retyped_from is not None:
        return _reopen_finding(
            f"type changed from {item.retyped_from} to {item.info.data_type} since the rejection", "type"
        )
    if reopenable_by_values(tag, at_least) and values_basis(findings_of(suggestion), at_least):
        return _reopen_finding("sampled values now match; the rejection was made without such a match", VALUES)
    return None


def apply_discovery(
    items: Sequence[Discovery],
    samples: dict[tuple[str, str], dict[str, list[str | None]]],
    now: dt.datetime,
) -> TagChanges:
    """Suggest, update, withdraw and reopen tags of `items` (inside the sync's transaction)."""
    at_least = threshold()
    changes = TagChanges()
    current: dict[int, dict[str, ColumnTag]] = defaultdict(dict)
    ids = [item.column.pk for item in items if item.column.pk is not None]
    if ids:
        for tag in ColumnTag.objects.filter(column_id__in=ids):
            current[tag.column_id][tag.tag] = tag

    new_tags: list[ColumnTag] = []
    changed: list[ColumnTag] = []
    withdrawn_ids: list[int] = []
    looked: list[int] = []
    untagged: list[int] = []
    for item in items:
        info = item.info
        values = samples.get(item.key, {}).get(info.name)
        blind = item.sampleable and values is None and pii.should_sample(info.name, info.data_type, info.type_category)
        if not blind and item.column.pk is not None and not current.get(item.column.pk):
            untagged.append(item.column.pk)
        suggestions = {
            s.tag: s
            for s in pii.suggest_tags(
                name=info.name,
                data_type=info.data_type,
                type_category=info.type_category,
                samples=values,
                threshold=at_least,
            )
        }
        have = current.get(item.column.pk, {})
        for tag in have.values():
            suggestion = suggestions.get(tag.tag)
            if tag.status == TagStatus.CONFIRMED or blind:
                continue
            if tag.status == TagStatus.SUGGESTED:
                if suggestion is None:
                    withdrawn_ids.append(tag.pk)
                    changes.withdrawn.append(
                        {"column": f"{item.qualified}.{info.name}", "tag": tag.tag, "confidence": tag.confidence}
                    )
                    continue
                findings, evidence = findings_of(suggestion), suggestion.evidence
                reopened = _reopened_finding(tag)
                if reopened is not None:  # why it is back stays until someone decides it
                    findings = [reopened, *findings]
                    evidence = f"reopened: {reopened['shape']}; {evidence}"[: pii.EVIDENCE_MAX]
                if (tag.confidence, tag.evidence, tag.findings) != (suggestion.confidence, evidence, findings):
                    tag.confidence, tag.evidence, tag.findings = suggestion.confidence, evidence, findings
                    tag.evaluated_at = now
                    changed.append(tag)
                else:
                    looked.append(tag.pk)
            elif tag.status == TagStatus.REJECTED and suggestion is not None and not blind:
                why = _reopen_reason(tag, suggestion, item, at_least)
                if why is None:
                    continue
                old = {
                    "status": tag.status,
                    "decided_by": tag.decided_by_id,
                    "decided_at": tag.decided_at.isoformat() if tag.decided_at else None,
                    "evidence": tag.evidence,
                    "findings": tag.findings,
                }
                tag.column = item.column
                tag.status = TagStatus.SUGGESTED
                tag.decided_by = None
                tag.decided_at = None
                tag.confidence = suggestion.confidence
                tag.evidence = f"reopened: {why['shape']}; {suggestion.evidence}"[: pii.EVIDENCE_MAX]
                tag.findings = [why, *findings_of(suggestion)]
                tag.evaluated_at = now
                changed.append(tag)
                changes.reopened.append((tag, old))
        for name, suggestion in suggestions.items():
            if name not in have:
                new_tags.append(
                    ColumnTag(
                        column=item.column,
                        tag=name,
                        evidence=suggestion.evidence,
                        confidence=suggestion.confidence,
                        findings=findings_of(suggestion),
                        evaluated_at=now,
                    )
                )

    if new_tags:
        ColumnTag.objects.bulk_create(new_tags)
    if changed:
        ColumnTag.objects.bulk_update(
            changed, ["status", "decided_by", "decided_at", "confidence", "evidence", "findings", "evaluated_at"]
        )
    if withdrawn_ids:
        ColumnTag.objects.filter(pk__in=withdrawn_ids, status=TagStatus.SUGGESTED).delete()
    if looked:
        # Not a change of the tag (history ignores `evaluated_at`): when discovery last looked.
        ColumnTag.objects.filter(pk__in=looked).update(evaluated_at=now)
    if untagged:
        # When an untagged column was last looked at (not a change: the next look is due a day later).
        Column.objects.filter(pk__in=untagged).update(pii_evaluated_at=now)
    changes.suggested = len(new_tags)
    changes.updated = len(changed) - len(changes.reopened)
    changes.evaluated = len(items)
    return changes
