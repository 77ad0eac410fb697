"""Export, plan and apply of checks-as-code documents (docs/quality.md#checks-as-code).

A document is authoritative for the datasets it names, and only for them: a check of a named dataset
that it does not list is removed, the checks of other datasets are never touched. Checks are matched
by name (a renamed check is one removed and one created). Every change goes through the services the
portal, the admin and the API use (their permission rule, validation and audit events), in one
transaction: all of a document or none of it. Owner-written SQL still waits for a review by someone
other than its author: a document can neither carry nor keep a review across a change of the SQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from audit.context import marked
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Dataset
from governance.services.common import refusal_recorded

from ..models import IntegrityWatch, Kind, QualityCheck
from ..permissions import may_define_checks
from ..services.checks import FIELDS, check_fields, quality_check_create, quality_check_delete, quality_check_update
from ..services.integrity import integrity_watch_set, watch_fields
from .document import (
    DEFAULTS,
    VERSION,
    DocumentError,
    check_entry,
    dataset_key,
    digest,
    parse_key,
    validate,
    watch_entry,
)

MAX_CHECKS = 1000  # each is validated like a check defined on the portal (a few queries): bounded work
REVIEW_NOTE = "owner-written SQL: it runs once someone other than its author has reviewed it"
BASELINE_NOTE = "a new rule starts from a new baseline: the next run's snapshot"


def key_of(dataset: Dataset) -> str:
    return dataset_key(dataset.source.name, dataset.schema, dataset.name)


def find_datasets(keys: list[str], *, within: QuerySet[Dataset] | None = None, what: str = "dataset") -> list[Dataset]:
    """The datasets of `keys` (in that order), or InvalidInput naming the first unknown one."""
    found, problems = _resolve(keys, within, lambda index: what if len(keys) == 1 else f"{what}[{index}]")
    if problems:
        raise DocumentError(problems)
    return [found[i] for i in range(len(keys))]


def _resolve(
    keys: list[str], within: QuerySet[Dataset] | None, path: Any
) -> tuple[dict[int, Dataset], list[tuple[str, str]]]:
    """{index: dataset} for each key, in one query, and a problem per key that names nothing."""
    problems: list[tuple[str, str]] = []
    parsed: dict[int, tuple[str, str, str]] = {}
    for index, key in enumerate(keys):
        try:
            parsed[index] = parse_key(key)
        except ValueError as exc:
            problems.append((path(index), f"{key!r}: {exc}"))
    rows: dict[tuple[str, str, str], Dataset] = {}
    if parsed:
        query = reduce(or_, (Q(source__name=s, schema=sc, name=n) for s, sc, n in parsed.values()))
        base = within if within is not None else Dataset.objects.all()
        for dataset in base.filter(query).select_related("source"):
            rows[(dataset.source.name, dataset.schema, dataset.name)] = dataset
    found: dict[int, Dataset] = {}
    for index, triple in parsed.items():
        if triple in rows:
            found[index] = rows[triple]
        else:
            problems.append((path(index), f"there is no dataset {keys[index]} in the catalog."))
    return found, sorted(problems)


# --- export ---------------------------------------------------------------------------------------------


def export_checks(datasets: Iterable[Dataset]) -> dict[str, Any]:
    """The document of these datasets' checks and watches (three queries): sorted by dataset key, then
    check name; no database id; a field left out when it holds its default. Exporting, planning the
    export and applying it changes nothing."""
    ids = [dataset.pk for dataset in datasets]
    rows = list(Dataset.objects.filter(pk__in=ids).select_related("source"))
    checks: dict[int, list[QualityCheck]] = {}
    for check in QualityCheck.objects.filter(dataset_id__in=ids):
        checks.setdefault(check.dataset_id, []).append(check)
    watches = {w.dataset_id: w for w in IntegrityWatch.objects.filter(dataset_id__in=ids)}
    entries = []
    for dataset in sorted(rows, key=key_of):
        entry: dict[str, Any] = {"dataset": key_of(dataset)}
        entry["checks"] = [
            check_entry({name: getattr(c, name) for name in FIELDS})
            for c in sorted(checks.get(dataset.pk, []), key=lambda c: c.name)
        ]
        watch = watches.get(dataset.pk)
        if watch is not None:
            entry["integrity"] = watch_entry(watch.mode, watch.key_column)
        entries.append(entry)
    return {"version": VERSION, "datasets": entries}


# --- plan -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckChange:
    """One check to create, change or remove. `fields`: the check as written (created), as it was
    (removed), or {field: [before, after]} (changed)."""

    action: str  # "created", "changed" or "removed"
    name: str
    fields: dict[str, Any]
    notes: tuple[str, ...] = ()
    check_id: int | None = field(default=None, compare=False)
    values: dict[str, Any] = field(default_factory=dict, compare=False)  # what the service is given

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.action == "created":
            out.update({k: v for k, v in self.fields.items() if k != "name"})
        elif self.action == "changed":
            out["fields"] = self.fields
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class WatchChange:
    before: dict[str, Any] | None
    after: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetPlan:
    key: str
    path: str  # where the document names it: datasets[3]
    dataset: Dataset = field(compare=False)
    checks: tuple[CheckChange, ...] = ()
    integrity: WatchChange | None = None

    def of(self, action: str) -> list[CheckChange]:
        return [c for c in self.checks if c.action == action]

    def as_dict(self) -> dict[str, Any]:
        watch = self.integrity
        return {
            "dataset": self.key,
            **{action: [c.as_dict() for c in self.of(action)] for action in ("created", "changed", "removed")},
            "integrity": None
            if watch is None
            else {
                "before": watch.before,
                "after": watch.after,
                **({"notes": list(watch.notes)} if watch.notes else {}),
            },
        }


@dataclass(frozen=True)
class Plan:
    """What applying `document` would do: the datasets it changes, each with its check and watch
    changes; `named`: every dataset the document names (key, path, dataset)."""

    document: dict[str, Any]
    digest: str
    named: tuple[tuple[str, str, Dataset], ...]
    datasets: tuple[DatasetPlan, ...]
    # Planned for an actor: the datasets named whose checks they may not change (apply would refuse).
    refused: tuple[str, ...] = field(default=(), compare=False)

    @property
    def changes(self) -> int:
        return sum(len(d.checks) + (d.integrity is not None) for d in self.datasets)

    def count(self, action: str) -> int:
        return sum(len(d.of(action)) for d in self.datasets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "document": self.digest,
            "changes": self.changes,
            "datasets": [d.as_dict() for d in self.datasets],
        }

    def summary(self, applied: bool = False) -> str:
        if not self.changes:
            n = len(self.named)
            named = f"the {n} dataset{'s' if n != 1 else ''} named {'match' if n != 1 else 'matches'} the file"
            return f"No changes: {named}."
        verbs = (
            ("created", "changed", "removed", "set") if applied else ("to create", "to change", "to remove", "to set")
        )
        parts = [
            f"{self.count(action)} {verb}"
            for action, verb in zip(("created", "changed", "removed"), verbs, strict=False)
        ]
        watches = sum(d.integrity is not None for d in self.datasets)
        if watches:
            parts.append(f"{watches} integrity watch{'es' if watches != 1 else ''} {verbs[3]}")
        return ", ".join(parts) + "."

    def render(self, applied: bool = False) -> str:
        """The plan for a person: `+` created, `~` changed (field: before → after), `-` removed."""
        lines: list[str] = []
        for d in self.datasets:
            lines.append(d.key)
            for c in d.checks:
                if c.action == "created":
                    detail = ", ".join(f"{k} {_shown(v)}" for k, v in c.fields.items() if k != "name")
                    lines.append(f"  + {c.name}: {detail}")
                elif c.action == "changed":
                    lines.append(
                        f"  ~ {c.name}: "
                        + "; ".join(f"{k} {_shown(b)} → {_shown(a)}" for k, (b, a) in c.fields.items())
                    )
                else:
                    lines.append(f"  - {c.name}")
                lines.extend(f"      ({note})" for note in c.notes)
            if d.integrity is not None:
                before = "not watched" if d.integrity.before is None else _watch(d.integrity.before)
                lines.append(f"  ~ integrity: {before} → {_watch(d.integrity.after)}")
                lines.extend(f"      ({note})" for note in d.integrity.notes)
        lines.append(self.summary(applied))
        if self.refused:
            lines.append(f"Apply would be refused: you may not change the checks of {', '.join(self.refused)}.")
        return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) and value and len(value) <= 60 and "\n" not in value else json.dumps(value)


def _watch(entry: dict[str, Any]) -> str:
    return entry["mode"] + (f" on {entry['key_column']}" if entry.get("key_column") else "")


def plan(document: Any, actor: Any = None, *, within: QuerySet[Dataset] | None = None, lock: bool = False) -> Plan:
    """What applying `document` would change (nothing is written), or DocumentError with every problem
    by path: a document the schema refuses, a dataset not in the catalog (or not in `within`) or named
    twice, a check named twice in a dataset or refused by the services' validation (an unknown column,
    a bad pattern, a threshold out of range...), a watch removed or refused. With an `actor`, the
    plan also lists the datasets named whose checks the actor may not change (`refused`)."""
    doc = validate(document)
    entries: list[dict[str, Any]] = doc["datasets"]
    if sum(len(entry.get("checks") or []) for entry in entries) > MAX_CHECKS:
        raise DocumentError([("datasets", f"at most {MAX_CHECKS} checks in one document: split it by source.")])
    found, problems = _resolve([e["dataset"] for e in entries], within, lambda i: f"datasets[{i}].dataset")
    first: dict[int, int] = {}
    for index, dataset in sorted(found.items()):
        if dataset.pk in first:
            problems.append(
                (f"datasets[{index}].dataset", f"names the dataset of datasets[{first[dataset.pk]}] again.")
            )
        first.setdefault(dataset.pk, index)
    if problems:
        raise DocumentError(problems)
    ids = [d.pk for d in found.values()]
    checks_q = QualityCheck.objects.filter(dataset_id__in=ids).order_by("pk")
    existing: dict[int, dict[str, QualityCheck]] = {}
    for check in checks_q.select_for_update() if lock else checks_q:
        existing.setdefault(check.dataset_id, {})[check.name] = check
    watches = {w.dataset_id: w for w in IntegrityWatch.objects.filter(dataset_id__in=ids)}
    named, planned = [], []
    for index, entry in enumerate(entries):
        dataset, path = found[index], f"datasets[{index}]"
        key = key_of(dataset)
        named.append((key, path, dataset))
        changes = _check_changes(dataset, path, entry.get("checks") or [], existing.get(dataset.pk, {}), problems)
        watch = _watch_change(dataset, path, key, entry.get("integrity"), watches.get(dataset.pk), problems)
        if changes or watch is not None:
            planned.append(DatasetPlan(key, path, dataset, tuple(changes), watch))
    if problems:
        raise DocumentError(problems)
    refused = tuple(key for key, _, dataset in named if actor is not None and not may_define_checks(actor, dataset))
    return Plan(doc, digest(doc), tuple(named), tuple(sorted(planned, key=lambda d: d.key)), refused)


def _problem(path: str, exc: InvalidInput) -> tuple[str, str]:
    """The service's refusal at its path in the document, without repeating the field's name."""
    where = f"{path}.{exc.field}" if exc.field else path
    message = exc.message
    for name in {*(exc.field or "").split(".")} - {""}:
        message = message.removeprefix(f"{name}: ")
    return where, message


def _check_changes(
    dataset: Dataset,
    path: str,
    wanted: list[dict[str, Any]],
    stored: dict[str, QualityCheck],
    problems: list[tuple[str, str]],
) -> list[CheckChange]:
    changes: list[CheckChange] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(wanted):
        where = f"{path}.checks[{index}]"
        try:
            values = check_fields(dataset, dict(entry))
        except InvalidInput as exc:
            problems.append(_problem(where, exc) if exc.field != "dataset" else (f"{path}.dataset", exc.message))
            continue
        name = values["name"]
        if name in seen:
            problems.append((f"{where}.name", f"{name!r} names {path}.checks[{seen[name]}] too: names are unique."))
            continue
        seen[name] = index
        check = stored.get(name)
        if check is None:
            notes = (REVIEW_NOTE,) if values["kind"] == Kind.CUSTOM_SQL else ()
            changes.append(CheckChange("created", name, check_entry(values), notes, values=values))
            continue
        before = check_entry({f: getattr(check, f) for f in FIELDS})
        after = check_entry(values)
        diff = {
            f: [before.get(f, _default(f)), after.get(f, _default(f))] for f in FIELDS if getattr(check, f) != values[f]
        }
        if diff:
            sql_changed = values["kind"] == Kind.CUSTOM_SQL and (check.kind != Kind.CUSTOM_SQL or "params" in diff)
            updated = {f: values[f] for f in diff}
            notes = (REVIEW_NOTE,) if sql_changed else ()
            changes.append(CheckChange("changed", name, diff, notes, check_id=check.pk, values=updated))
    for name in sorted(set(stored) - set(seen)):
        check = stored[name]
        fields = check_entry({f: getattr(check, f) for f in FIELDS})
        changes.append(CheckChange("removed", name, fields, check_id=check.pk))
    return changes


def _default(name: str) -> Any:
    return DEFAULTS.get(name)


def _watch_change(
    dataset: Dataset,
    path: str,
    key: str,
    wanted: dict[str, Any] | None,
    watch: IntegrityWatch | None,
    problems: list[tuple[str, str]],
) -> WatchChange | None:
    if wanted is None:
        if watch is not None:
            keep = watch_entry(watch.mode, watch.key_column)
            problems.append(
                (
                    f"{path}.integrity",
                    f"{key} is watched ({_watch(keep)}) and a watch is never removed: keep integrity: {keep}.",
                )
            )
        return None
    try:
        mode, key_column = watch_fields(dataset, wanted["mode"], wanted.get("key_column", ""))
    except InvalidInput as exc:
        problems.append(
            _problem(f"{path}.integrity", exc) if exc.field != "dataset" else (f"{path}.dataset", exc.message)
        )
        return None
    after = watch_entry(mode, key_column)
    if watch is None:
        return WatchChange(None, after, ("the next run takes its first snapshot",))
    before = watch_entry(watch.mode, watch.key_column)
    return None if before == after else WatchChange(before, after, (BASELINE_NOTE,))


# --- apply ----------------------------------------------------------------------------------------------


def apply(planned: Plan, actor: Any) -> Plan:
    """Make the plan's changes through the services, in one transaction, as `actor`; every audit
    event carries {"via": "code", "document": <digest>}. Refused (NotPermitted, naming the first
    dataset) unless the actor may define the checks of every dataset the document names; refused
    (ConflictError) when the checks changed since the plan. Returns what was applied."""
    keys = [key for key, _, _ in planned.named]
    with marked(via="code", document=planned.digest):
        with refusal_recorded(action="quality_checks.apply", actor=actor, metadata={"datasets": keys}):
            with transaction.atomic():
                current = plan(planned.document, lock=True)
                for key, path, dataset in current.named:
                    if not may_define_checks(actor, dataset):
                        raise NotPermitted(
                            f"{path}.dataset: {getattr(actor, 'username', None) or 'this caller'} may not change "
                            f"the quality checks of {key} (its owner, its stewards and governance admins do); "
                            "nothing was changed.",
                            field=f"{path}.dataset",
                        )
                if current.as_dict() != planned.as_dict():
                    raise ConflictError("The checks changed since this plan was made: plan again; nothing was changed.")
                for step in current.datasets:
                    _apply_dataset(step, actor)
    return current


def _apply_dataset(step: DatasetPlan, actor: Any) -> None:
    for change in step.of("removed"):
        quality_check_delete(actor=actor, check=QualityCheck(pk=change.check_id))
    for change in step.of("changed"):
        quality_check_update(actor=actor, check=QualityCheck(pk=change.check_id), **change.values)
    for change in step.of("created"):
        quality_check_create(actor=actor, dataset=step.dataset, **change.values)
    if step.integrity is not None:
        after = step.integrity.after
        integrity_watch_set(
            actor=actor, dataset=step.dataset, mode=after["mode"], key_column=after.get("key_column", "")
        )
