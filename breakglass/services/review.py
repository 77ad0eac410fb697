"""The review of each break of the glass: by a security officer other than the person, within
BREAK_GLASS_REVIEW_HOURS; an overdue one is marked and the officers told (beat, breakglass.tasks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.roles import is_security_officer
from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.services.common import refusal_recorded
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ..models import BreakGlassUse, Outcome


def may_review(actor: Any, use: BreakGlassUse) -> bool:
    return is_security_officer(actor) and actor.pk != use.user_id


def break_glass_review(*, actor: Any, use: BreakGlassUse | int, outcome: str, note: str = "") -> BreakGlassUse:
    """Record an officer's judgement of one use: appropriate or inappropriate (then say why)."""
    pk = use if isinstance(use, int) else use.pk
    target = use if isinstance(use, BreakGlassUse) else (BreakGlassUse, use)
    note = (note or "").strip()
    with refusal_recorded(action="break_glass.review", actor=actor, target=target, metadata={"outcome": outcome}):
        with transaction.atomic():
            locked = (
                BreakGlassUse.objects.select_for_update(of=("self",))
                .select_related("grant__dataset", "user")
                .filter(pk=pk)
                .first()
            )
            if locked is None:
                raise InvalidInput(f"There is no break-glass use #{pk}.", field="use")
            if actor is None or not is_security_officer(actor):
                raise NotPermitted("Only a security officer reviews break-glass access.")
            if actor.pk == locked.user_id:
                raise NotPermitted("You cannot review your own break-glass access: another officer must.")
            if locked.reviewed_at is not None:
                raise ConflictError(
                    f"Break-glass use #{locked.pk} was already reviewed ({locked.get_outcome_display()}).",
                    state=locked.outcome,
                )
            if outcome not in Outcome.values:
                raise InvalidInput(f"The outcome is one of {', '.join(Outcome.values)}.", field="outcome")
            if outcome == Outcome.INAPPROPRIATE and not note:
                raise InvalidInput("Say what was inappropriate; it stays on the record.", field="note")
            locked.outcome = outcome
            locked.review_note = note
            locked.reviewed_by = actor
            locked.reviewed_at = timezone.now()
            locked.save(update_fields=["outcome", "review_note", "reviewed_by", "reviewed_at"])
            audit.record(
                action="break_glass.reviewed",
                actor=actor,
                target=locked,
                reason=note,
                changes={"outcome": ["", outcome]},
                metadata={
                    "person": locked.user.username,
                    "dataset": locked.grant.dataset.qualified_name,
                    "grant": locked.grant_id,
                    "late": locked.reviewed_at > locked.review_due_at,
                },
            )
    return locked


def break_glass_reviews_mark_overdue(*, now: dt.datetime | None = None) -> int:
    """Mark every unreviewed use past its review deadline (once each) and tell the officers."""
    now = now or timezone.now()
    marked = 0
    due = BreakGlassUse.objects.unreviewed().filter(review_due_at__lte=now, overdue_at__isnull=True)
    for pk in list(due.order_by("pk").values_list("pk", flat=True)):
        with transaction.atomic():
            use = (
                BreakGlassUse.objects.select_for_update(of=("self",), skip_locked=True)
                .select_related("grant__dataset", "user", "assigned_officer")
                .filter(pk=pk, reviewed_at__isnull=True, overdue_at__isnull=True)
                .first()
            )
            if use is None:  # reviewed meanwhile, or another run holds it
                continue
            use.overdue_at = now
            use.save(update_fields=["overdue_at"])
            audit.record(
                action="break_glass.review_overdue",
                actor=None,
                target=use,
                metadata={
                    "person": use.user.username,
                    "dataset": use.grant.dataset.qualified_name,
                    "review_due_at": use.review_due_at,
                    "assigned_officer": use.assigned_officer.username if use.assigned_officer else None,
                },
            )
            notify(
                Notice.BREAK_GLASS_REVIEW_OVERDUE,
                dedup_key=f"break-glass-overdue:{use.pk}",
                use=use.pk,
                grant=use.grant_id,
                person=use.user.username,
                reason=use.reason,
                review_due_at=use.review_due_at.isoformat(),
                assigned_officer=use.assigned_officer.username if use.assigned_officer else "",
            )
            marked += 1
    return marked
