"""Breaking the glass: an on-call engineer's read access at once, within the classification's policy.

Checks first (the on-call group, the policy, the hours, the reason), then the second factor (its
throttling commits on its own: a wrong code counts even though the activation is refused), then in
one transaction: the request approved at once and its Grant (governance/services/request_grants.py:
the same path as an approved request, so the engine applies it within seconds and its end revokes
it on time), the `BreakGlassUse` with its review due and its assigned officer, `break_glass.activated`
and the officers' notification. A refusal is recorded as `break_glass.activate` denied.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from accounts.mfa import has_device, second_factor_verify
from accounts.roles import SECURITY_OFFICERS, is_on_call, on_call_group
from audit import services as audit
from governance import durations
from governance.errors import ConflictError, InvalidInput, NotPermitted, PolicyViolation
from governance.models import Dataset, Grant
from governance.policy import pii_column_names
from governance.services.common import refusal_recorded
from governance.services.jit import jit_request_check
from governance.services.request_grants import emergency_request_grant
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ..models import BreakGlassPolicy, BreakGlassUse


def parse_hours(raw: Any) -> Decimal:
    """Hours as a positive decimal (fractions allowed: 0.5 is half an hour), or InvalidInput on `hours`."""
    try:
        hours = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput("Say for how many hours you need access (a number, e.g. 2 or 0.5).", field="hours") from None
    if not hours.is_finite() or hours <= 0:
        raise InvalidInput("The hours must be a positive number.", field="hours")
    return hours.quantize(Decimal("0.0001"))


def policy_for(dataset: Dataset) -> BreakGlassPolicy | None:
    return BreakGlassPolicy.objects.filter(classification_id=dataset.classification_id).first()


def _checked(*, actor: Any, dataset: Dataset, reason: str, hours: Any) -> tuple[BreakGlassPolicy, Decimal]:
    if actor is None or not actor.is_active:
        raise NotPermitted("Only an active user can break the glass.")
    if not is_on_call(actor):
        raise NotPermitted(f"Only members of the on-call group ({on_call_group()}) can break the glass.")
    rules = policy_for(dataset)
    if rules is None or not rules.allowed:
        raise PolicyViolation(
            f"{dataset.classification.name} data cannot be opened by breaking the glass; request access instead.",
            field="dataset",
        )
    parsed = parse_hours(hours)
    if parsed > rules.max_hours:
        raise PolicyViolation(
            f"Break-glass access to {dataset.classification.name} data lasts at most {rules.max_hours} hours.",
            field="hours",
        )
    if not (reason or "").strip():
        raise InvalidInput(
            "Say why you break the glass (the incident, the ticket); officers review it.", field="reason"
        )
    return rules, parsed


def covered_columns(dataset: Dataset, *, include_pii: bool) -> list[str]:
    """The columns the access covers: all (empty list) when PII is included or there is none, else
    today's columns without PII, named (a column added later is not covered silently)."""
    columns = list(dataset.columns.filter(is_present=True).prefetch_related("tags").order_by("ordinal"))
    pii = pii_column_names(columns)
    if include_pii or not pii:
        return []
    rest = [c.name for c in columns if c.name not in pii]
    if not rest:
        raise PolicyViolation(
            f"Every column of {dataset.qualified_name} holds PII, which the break-glass policy of "
            f"{dataset.classification.name} data leaves out: there is nothing to open.",
            field="dataset",
        )
    return rest


def assign_officer(*, exclude: Any) -> Any:
    """The active security officer (not the person) with the fewest open reviews; ties by id."""
    return (
        get_user_model()
        .objects.filter(groups__name=SECURITY_OFFICERS, is_active=True)
        .exclude(pk=exclude.pk)
        .annotate(
            open_reviews=Count(
                "break_glass_assigned",
                filter=Q(break_glass_assigned__reviewed_at__isnull=True),
                distinct=True,
            )
        )
        .order_by("open_reviews", "pk")
        .first()
    )


def break_glass_activate(
    *,
    actor: Any,
    dataset: Dataset,
    reason: str,
    hours: Any,
    otp_token: str,
    temporary_login: bool = False,
    now: dt.datetime | None = None,
) -> BreakGlassUse:
    """Grant `actor` read access to `dataset` at once for `hours` (see the module's docstring).
    `temporary_login` adds a temporary database login valid until the access ends (JIT credentials,
    revealed once on the grant's page), for an engineer with no login of their own on the source."""
    reason = (reason or "").strip()
    with refusal_recorded(
        action="break_glass.activate",
        actor=actor,
        target=dataset,
        metadata={"hours": str(hours), "reason": reason, "temporary_login": bool(temporary_login)},
    ):
        dataset = Dataset.objects.select_related("classification", "source").get(pk=dataset.pk)
        rules, parsed = _checked(actor=actor, dataset=dataset, reason=reason, hours=hours)
        if temporary_login:
            try:
                jit_request_check(dataset=dataset, grantee_user=actor, grantee_role=None)
            except InvalidInput as exc:  # named after this door's field
                raise InvalidInput(exc.message, field="temporary_login") from None
        if not has_device(actor):
            raise NotPermitted(
                "Set up a second factor first (Account → Two-factor authentication): breaking the glass needs it.",
                field="otp_token",
            )
        if not (otp_token or "").strip() or second_factor_verify(user=actor, token=otp_token) is None:
            raise InvalidInput("The second-factor code is wrong or missing.", field="otp_token")
        with transaction.atomic():
            # The policy again, under a lock: an officer turning it off meanwhile wins.
            locked = BreakGlassPolicy.objects.select_for_update().filter(pk=rules.pk).first()
            if locked is None or not locked.allowed or parsed > locked.max_hours:
                raise PolicyViolation("The break-glass policy changed meanwhile; try again.", field="dataset")
            at = now or timezone.now()
            open_grant = (
                Grant.objects.active(at)
                .filter(dataset=dataset, grantee_user=actor, break_glass_use__isnull=False)
                .first()
            )
            if open_grant is not None:
                raise ConflictError(
                    f"You already hold break-glass access to {dataset.qualified_name} until "
                    f"{timezone.localtime(open_grant.ends_at):%Y-%m-%d %H:%M}.",
                    grant=open_grant.pk,
                )
            columns = covered_columns(dataset, include_pii=locked.include_pii)
            duration = dt.timedelta(seconds=float(parsed * 3600))
            grant = emergency_request_grant(
                requester=actor,
                dataset=dataset,
                columns=columns,
                duration=duration,
                reason=reason,
                emergency_policy={
                    "break_glass": True,
                    "max_hours": locked.max_hours,
                    "include_pii": locked.include_pii,
                    "max_duration_seconds": locked.max_hours * 3600,
                    "max_duration": durations.words(dt.timedelta(hours=locked.max_hours)),
                },
                jit_credentials=temporary_login,
            )
            officer = assign_officer(exclude=actor)
            activated = grant.starts_at
            use = BreakGlassUse.objects.create(
                grant=grant,
                user=actor,
                reason=reason,
                hours=parsed,
                include_pii=locked.include_pii,
                activated_at=activated,
                review_due_at=activated + dt.timedelta(hours=settings.BREAK_GLASS_REVIEW_HOURS),
                assigned_officer=officer,
            )
            audit.record(
                action="break_glass.activated",
                actor=actor,
                target=use,
                reason=reason,
                metadata={
                    "dataset": dataset.qualified_name,
                    "dataset_id": dataset.pk,
                    "classification": dataset.classification.slug,
                    "grant": grant.pk,
                    "hours": str(parsed),
                    "duration": durations.words(duration),
                    "ends_at": grant.ends_at,
                    "columns": columns,
                    "include_pii": locked.include_pii,
                    "temporary_login": bool(grant.jit_role),
                    "assigned_officer": officer.username if officer else None,
                    "review_due_at": use.review_due_at,
                },
            )
            notify(
                Notice.BREAK_GLASS_ACTIVATED,
                actor=actor,
                use=use.pk,
                grant=grant.pk,
                person=actor.username,
                reason=reason,
                duration=durations.words(duration),
                review_due_at=use.review_due_at.isoformat(),
                assigned_officer=officer.username if officer else "",
            )
    return use
