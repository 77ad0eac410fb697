"""Column treatment rules (governance/models/treatments.py, docs/privacy.md "Column treatments"): what a
request may choose per PII column, its default, and the approval stages a choice adds to the
request's effective policy. Combined here and nowhere else; governance.policy holds the rest of the
approval policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidInput, PolicyViolation
from .models import STAGE_ORDER, TREATMENT_ORDER, AccessLevel, ApprovalStage, Dataset, Treatment
from .policy import EffectivePolicy, column_pii_tags
from .provisioners import pg_views


@dataclass(frozen=True)
class ColumnTreatments:
    """What the policy lets a request choose for one PII column: ``allowed`` in TREATMENT_ORDER,
    ``default`` among them, and the extra stage a treatment needs (treatment -> stage)."""

    column: str
    tags: tuple[str, ...]
    data_type: str
    allowed: tuple[str, ...]
    default: str
    stages: tuple[tuple[str, str], ...] = ()

    def stage_for(self, treatment: str) -> str:
        return dict(self.stages).get(treatment, "")


def treatment_options(*, dataset: Dataset, columns: Iterable[str], enforceable: bool = True) -> list[ColumnTreatments]:
    """Per PII column among ``columns`` (in the dataset's order), the treatments its classification
    allows for each of its PII kinds, combined: the strictest wins. Allowed = what every kind allows
    (and a mask only where one keeps the column's type); the default = the strictest of the kinds'
    defaults, or the next stricter allowed; a treatment's stages = every kind's stage for it. A
    classification with no rule for a kind (nor for "any") allows everything, raw by default.
    ``enforceable=False`` (a source whose backend has no governed views, e.g. S3): raw only, where
    the policy allows it, with raw's stages; a treatment nobody could enforce is never offered."""
    wanted = set(columns)
    rules: dict[str, list[Any]] = {}
    for rule in dataset.classification.treatment_rules.all():
        rules.setdefault(rule.tag, []).append(rule)
    out: list[ColumnTreatments] = []
    for col in dataset.columns.filter(is_present=True, name__in=wanted).order_by("ordinal").prefetch_related("tags"):
        tags = tuple(column_pii_tags(col))
        if not tags:
            continue
        allowed = set(TREATMENT_ORDER)
        defaults: list[str] = []
        stages: dict[str, set[str]] = {}
        for tag in tags:
            own = rules.get(tag) or rules.get("") or []
            if own:
                allowed &= {r.treatment for r in own}
                defaults += [r.treatment for r in own if r.is_default]
                for r in own:
                    if r.stage:
                        stages.setdefault(r.treatment, set()).add(r.stage)
        if not any(pg_views.mask_offered(tag, col.data_type) for tag in tags):
            allowed.discard(Treatment.MASKED.value)
        if not enforceable:
            allowed &= {Treatment.RAW.value}
            defaults = []
        ordered = tuple(t for t in TREATMENT_ORDER if t in allowed)
        strictest = max((TREATMENT_ORDER.index(d) for d in defaults), default=0)
        default = next((t for t in ordered if TREATMENT_ORDER.index(t) >= strictest), ordered[-1] if ordered else "")
        out.append(
            ColumnTreatments(
                column=col.name,
                tags=tags,
                data_type=col.data_type,
                allowed=ordered,
                default=default,
                stages=tuple(sorted((t, s) for t, ss in stages.items() for s in ss)),
            )
        )
    return out


def resolve_treatments(*, options: list[ColumnTreatments], chosen: dict[str, str] | None, level: str) -> dict[str, str]:
    """Each PII column's treatment: the one chosen, else its default. A choice for a column that is
    not a covered PII column, an unknown treatment, one the policy does not allow, or a treatment
    with write or admin access (a view is read-only) is refused on the field ``treatments``."""
    chosen = dict(chosen or {})
    by_column = {o.column: o for o in options}
    for column, treatment in chosen.items():
        if column not in by_column:
            raise InvalidInput(
                f"treatments: {column!r} is not a PII column this request covers; treatments apply to those only.",
                field="treatments",
            )
        if treatment not in TREATMENT_ORDER:
            raise InvalidInput(
                f"treatments: unknown treatment {treatment!r} for {column!r}; use one of {', '.join(TREATMENT_ORDER)}.",
                field="treatments",
            )
        if treatment not in by_column[column].allowed:
            allowed = ", ".join(by_column[column].allowed) or "none"
            raise PolicyViolation(
                f"treatments: {treatment} is not allowed for {column!r} here; allowed: {allowed}.", field="treatments"
            )
    for option in options:
        if not option.allowed:
            raise PolicyViolation(
                f"treatments: the policy allows no treatment of {option.column!r}; leave the column out.",
                field="treatments",
            )
    if level == AccessLevel.READ:
        return {o.column: chosen.get(o.column, o.default) for o in options}
    # Write and admin access act on the table itself: every PII column is raw (with raw's stages).
    if any(t != Treatment.RAW for t in chosen.values()):
        raise PolicyViolation(
            "treatments: masked, pseudonymised and nulled columns are read through a view: ask for read access.",
            field="treatments",
        )
    refused = [o.column for o in options if Treatment.RAW not in o.allowed]
    if refused:
        raise PolicyViolation(
            f"treatments: {AccessLevel(level).label} access reads {', '.join(refused)} raw, which the policy "
            "does not allow here: ask for read access.",
            field="treatments",
        )
    return {o.column: Treatment.RAW.value for o in options}


def with_treatments(
    policy: EffectivePolicy, *, options: list[ColumnTreatments], treatments: dict[str, str]
) -> EffectivePolicy:
    """``policy`` with the treatment rules in its snapshot, and the stages the chosen treatments
    need added (raw under Restricted: the security officer's), each with a note saying why."""
    stages = set(policy.stages)
    notes = list(policy.notes)
    for option in options:
        stage = option.stage_for(treatments[option.column])
        if stage and stage not in stages:
            stages.add(stage)
            notes.append(
                f"{treatments[option.column].capitalize()} {option.column} needs the "
                f"{ApprovalStage(stage).label.lower()} stage."
            )
    snapshot = tuple(
        {
            "column": o.column,
            "tags": list(o.tags),
            "allowed": list(o.allowed),
            "default": o.default,
            "chosen": treatments[o.column],
            "stage": o.stage_for(treatments[o.column]),
        }
        for o in options
    )
    return replace(
        policy,
        stages=tuple(s for s in STAGE_ORDER if s in stages),
        auto_approve=policy.auto_approve and stages == set(policy.stages),
        notes=tuple(notes),
        treatments=snapshot,
    )
