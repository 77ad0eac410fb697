"""Editing the policy itself. Requests in flight keep the policy snapshotted at their submission."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.roles import is_governance_admin
from audit import services as audit

from .. import durations
from ..errors import InvalidInput, NotPermitted
from ..managed import refuse_if_managed
from ..models import STAGE_ORDER, Classification
from .common import assign_fields, refusal_recorded

CLASSIFICATION_FIELDS = [
    "name",
    "description",
    "approval_stages",
    "min_duration",
    "max_duration",
    "justification_required",
    "auto_approve",
    "pii_requires_explicit_request",
    "allow_pii_access",
    "terminate_sessions_on_revoke",
]


def classification_update(
    *, classification: Classification, actor: Any, reason: str = "", **fields: Any
) -> Classification:
    with refusal_recorded(action="classification.update", actor=actor, target=classification), transaction.atomic():
        if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
            raise NotPermitted("Only governance admins can change the approval policy.")
        obj = Classification.objects.select_for_update().get(pk=classification.pk)
        refuse_if_managed(obj)  # a policy document holds it: every door is refused here
        classification_check(classification=obj, fields=fields)
        changes = assign_fields(obj, fields, CLASSIFICATION_FIELDS)
        if changes:
            obj.full_clean()
            obj.save()
            audit.record(action="classification.updated", actor=actor, target=obj, changes=changes, reason=reason)
    return obj


def classification_check(*, classification: Classification, fields: dict[str, Any]) -> None:
    """What `classification_update` checks before it writes (InvalidInput naming the field), with no
    write: the stages known (put in their order, in `fields`), the durations within the bounds. The
    policy plan (policy/) calls it so that a document is refused at plan time, by path."""
    stages = fields.get("approval_stages")
    if stages is not None:
        bad = [s for s in stages if s not in STAGE_ORDER]
        if bad:
            raise InvalidInput(f"Unknown approval stage(s): {', '.join(bad)}.", field="approval_stages")
        fields["approval_stages"] = [s for s in STAGE_ORDER if s in stages]
    _check_durations(classification, fields)


def _check_durations(obj: Classification, fields: dict[str, Any]) -> None:
    """The shortest and longest durations, in words when refused: at least the floor, the shortest
    no longer than the longest, the longest at most ten years."""
    shortest = fields.get("min_duration", obj.min_duration)
    longest = fields.get("max_duration", obj.max_duration)
    floor = durations.floor()
    for name, value, label in (("min_duration", shortest, "shortest"), ("max_duration", longest, "longest")):
        if value is None or value < floor:
            raise InvalidInput(f"The {label} duration must be at least {durations.words(floor)}.", field=name)
        if value > durations.LONGEST:
            raise InvalidInput(
                f"The {label} duration must be at most {durations.words(durations.LONGEST)}.", field=name
            )
    if shortest > longest:
        raise InvalidInput(
            f"The shortest duration ({durations.words(shortest)}) is longer than the longest "
            f"({durations.words(longest)}).",
            field="min_duration",
        )
