"""The break-glass policy of a classification, set by security officers and governance admins (audited)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit import services as audit
from governance.errors import InvalidInput, NotPermitted
from governance.models import Classification
from governance.services.common import refusal_recorded

from ..models import MAX_HOURS, BreakGlassPolicy
from ..permissions import may_set_policy


def break_glass_policy_set(
    *, actor: Any, classification: Classification, allowed: bool, max_hours: int, include_pii: bool
) -> BreakGlassPolicy:
    with refusal_recorded(action="break_glass.set_policy", actor=actor, target=classification):
        with transaction.atomic():
            if not may_set_policy(actor):
                raise NotPermitted("Only security officers and governance admins set the break-glass policy.")
            if not isinstance(max_hours, int) or isinstance(max_hours, bool) or not 1 <= max_hours <= MAX_HOURS:
                raise InvalidInput(f"max_hours: a whole number of hours from 1 to {MAX_HOURS}.", field="max_hours")
            rules, created = BreakGlassPolicy.objects.select_for_update().get_or_create(classification=classification)
            before = {"allowed": rules.allowed, "max_hours": rules.max_hours, "include_pii": rules.include_pii}
            after = {"allowed": bool(allowed), "max_hours": max_hours, "include_pii": bool(include_pii)}
            changes = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
            if changes or created:
                for key, value in after.items():
                    setattr(rules, key, value)
                rules.save()
                audit.record(
                    action="break_glass.policy_changed",
                    actor=actor,
                    target=rules,
                    changes=changes,
                    metadata={"classification": classification.slug},
                )
    return rules
