"""Reads of the break-glass app: the uses to review, the overdue and unused ones, what a use did."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.roles import is_on_call, is_security_officer, sees_everything
from governance.models import Classification, Dataset
from governance.selectors.usage import WITH_USAGE, LastUse, UseState, last_use_of

from .models import BreakGlassPolicy, BreakGlassUse

USE_RELATED = ("grant__dataset__source", "grant__dataset__classification", "user", "assigned_officer", "reviewed_by")


def uses_visible_to(user: Any) -> QuerySet[BreakGlassUse]:
    """Officers, admins and auditors see every use; anyone else their own."""
    qs = BreakGlassUse.objects.select_related(*USE_RELATED, *(f"grant__{r}" for r in WITH_USAGE))
    if sees_everything(user):
        return qs
    return qs.filter(user=user)


def use_for(user: Any, pk: int) -> BreakGlassUse | None:
    return uses_visible_to(user).filter(pk=pk).first()


def unreviewed_uses(*, now: dt.datetime | None = None) -> QuerySet[BreakGlassUse]:
    return BreakGlassUse.objects.unreviewed().select_related(*USE_RELATED).order_by("review_due_at", "pk")


def overdue_uses(*, now: dt.datetime | None = None) -> QuerySet[BreakGlassUse]:
    """Unreviewed past their deadline (whether or not the beat task has marked them yet)."""
    return unreviewed_uses().filter(review_due_at__lte=now or timezone.now())


def unused_uses(*, now: dt.datetime | None = None) -> QuerySet[BreakGlassUse]:
    """Access that ended with no use seen (no GrantUsage row): the glass was broken for nothing, or
    the source could not tell (the page says which)."""
    at = now or timezone.now()
    ended = Q(grant__ends_at__lte=at) | Q(grant__revoked_at__isnull=False)
    return (
        BreakGlassUse.objects.filter(ended, grant__usage__isnull=True)
        .select_related(*USE_RELATED, *(f"grant__{r}" for r in WITH_USAGE))
        .order_by("-activated_at", "-pk")
    )


@dataclass(frozen=True)
class Summary:
    unreviewed: int
    overdue: int
    unused: int

    @property
    def attention(self) -> int:
        return self.unreviewed + self.unused


def summary(*, now: dt.datetime | None = None) -> Summary:
    at = now or timezone.now()
    return Summary(
        unreviewed=unreviewed_uses().count(), overdue=overdue_uses(now=at).count(), unused=unused_uses(now=at).count()
    )


def review_queue(user: Any) -> QuerySet[BreakGlassUse]:
    """What waits for an officer: unreviewed uses of others, theirs first."""
    if not is_security_officer(user):
        return BreakGlassUse.objects.none()
    return unreviewed_uses().exclude(user=user)


@dataclass(frozen=True)
class Statements:
    """What the source can tell of what the person did with the access (never made up)."""

    can_tell: bool
    text: str


def statements_of(use: BreakGlassUse) -> Statements:
    """The source's record of the use, as far as it goes: the portal reads pg_stat_statements per
    target role (governance/services/usage.py) to learn *whether and when* a grant was used; it keeps
    no statement texts, so it says so rather than guess."""
    last: LastUse = last_use_of(use.grant)
    if last.state == UseState.CANNOT_TELL:
        return Statements(False, f"The source cannot tell: {last.reason}")
    if last.state == UseState.USED:
        return Statements(
            True,
            f"{last.text} as {last.used_as or 'the grantee'}. The portal records when a grant is used "
            "(pg_stat_statements), not the statements' texts: ask the source's own logs for them.",
        )
    return Statements(True, f"No statement was seen on the source ({last.text.lower()}).")


def policies() -> list[tuple[Classification, BreakGlassPolicy | None]]:
    """Every classification with its break-glass policy (None: not allowed)."""
    by_id = {p.classification_id: p for p in BreakGlassPolicy.objects.all()}
    return [(c, by_id.get(c.pk)) for c in Classification.objects.order_by("rank")]


def policy_for_dataset(dataset: Dataset) -> BreakGlassPolicy | None:
    return BreakGlassPolicy.objects.filter(classification_id=dataset.classification_id).first()


def may_break_glass_on(user: Any, dataset: Dataset) -> bool:
    """Whether to offer the form: the person is on call and the classification allows it."""
    if not is_on_call(user):
        return False
    return BreakGlassPolicy.objects.filter(classification_id=dataset.classification_id, allowed=True).exists()
