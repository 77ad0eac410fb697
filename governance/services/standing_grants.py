"""Standing grants: access held by a service account or a role without a time-boxed request.

They are written in a policy document (docs/policy-as-code.md#standing-grants) and applied by the
policy app through these services, which make them exactly as an approved request's grant is made
(the row, its `grant.created` event, a provisioning job for the engine, its end scheduled) and end
them as any grant ends (`revoke_locked`: the row stamped, `grant.revoked`, a revoke job). A standing
grant has no source request; its `reason` says which document holds it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.roles import is_governance_admin
from audit import services as audit

from .. import durations
from ..backends import backend_for
from ..errors import ConflictError, InvalidInput, NotPermitted, PolicyViolation
from ..managed import refuse_if_managed
from ..models import AccessLevel, Dataset, Grant, GrantStatus, JobAction, Role, SourcePrincipal
from ..models.requests import UNPROVISIONED_LEVELS
from .common import refusal_recorded
from .engine.jobs import provisioning_job_create
from .grant_ends import grant_end_schedule
from .grants import revoke_locked

LEVELS = [level for level in AccessLevel.values if level not in UNPROVISIONED_LEVELS]


def _ensure_admin(actor: Any) -> None:
    if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
        raise NotPermitted("Only governance admins can hold standing grants in place.")


def standing_grant_check(
    *,
    dataset: Dataset,
    level: str,
    columns: list[str],
    ends_at: dt.datetime,
    grantee_user: Any = None,
    grantee_role: Role | None = None,
) -> None:
    """What a standing grant must be (InvalidInput/PolicyViolation naming the field), with no write:
    the policy plan calls it for every grant it would create, so that apply is not refused later."""
    if (grantee_user is None) == (grantee_role is None):
        raise InvalidInput("A standing grant is held by one user or one role.", field="grantee")
    if grantee_user is not None and not grantee_user.is_active:
        raise PolicyViolation(f"{grantee_user.username} is not active: it cannot hold access.", field="grantee")
    if level not in LEVELS:
        raise InvalidInput(f"The level is one of {', '.join(LEVELS)}.", field="level")
    if not dataset.is_present:
        raise PolicyViolation(f"{dataset.qualified_name} no longer exists in its source.", field="dataset")
    if columns:
        known = set(dataset.columns.filter(is_present=True).values_list("name", flat=True))
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise InvalidInput(
                f"{dataset.qualified_name} has no column {', '.join(repr(c) for c in unknown)}.", field="columns"
            )
    now = timezone.now()
    if ends_at <= now:
        raise InvalidInput("The end (until) is in the past.", field="until")
    if ends_at - now > durations.LONGEST:
        raise PolicyViolation(f"A grant lasts at most {durations.words(durations.LONGEST)}.", field="until")
    source = dataset.source
    mapped_only = grantee_user is not None and source.provisions and backend_for(source).needs_mapped_principal
    if mapped_only and not SourcePrincipal.objects.filter(source=source, user=grantee_user).exists():
        raise PolicyViolation(
            f"{grantee_user.username} has no IAM role or user on {source.name}: map one first.", field="grantee"
        )


def standing_grant_create(
    *,
    actor: Any,
    dataset: Dataset,
    level: str,
    columns: list[str],
    ends_at: dt.datetime,
    reason: str,
    grantee_user: Any = None,
    grantee_role: Role | None = None,
    metadata: dict[str, Any] | None = None,
) -> Grant:
    """A standing grant, recorded and queued for the engine (which provisions it on the target)."""
    with refusal_recorded(action="grant.create", actor=actor, target=dataset), transaction.atomic():
        _ensure_admin(actor)
        dataset = Dataset.objects.select_related("source", "classification").get(pk=dataset.pk)
        standing_grant_check(
            dataset=dataset,
            level=level,
            columns=columns,
            ends_at=ends_at,
            grantee_user=grantee_user,
            grantee_role=grantee_role,
        )
        grant = Grant.objects.create(
            status=GrantStatus.APPROVED,
            grantee_user=grantee_user,
            grantee_role=grantee_role,
            dataset=dataset,
            level=level,
            columns=list(columns),
            starts_at=timezone.now(),
            ends_at=ends_at,
            reason=reason,
        )
        audit.record(
            action="grant.created",
            actor=actor,
            target=grant,
            reason=reason,
            metadata={
                "standing": True,
                "dataset": dataset.qualified_name,
                "level": level,
                "grantee": f"role {grantee_role.name}" if grantee_role else grantee_user.username,
                "columns": list(columns),
                "ends_at": ends_at,
                **(metadata or {}),
            },
        )
        provisioning_job_create(grant=grant, action=JobAction.APPLY, actor=actor)
        grant_end_schedule(grant)
    return grant


def standing_grant_revoke(*, grant: Grant, actor: Any, reason: str, metadata: dict[str, Any] | None = None) -> Grant:
    """End a standing grant now (the engine revokes it on the target). Refused for a grant of a
    request (those are revoked with their own rules) and, outside the policy applier, for a grant
    managed in code."""
    with refusal_recorded(action="grant.revoke", actor=actor, target=grant), transaction.atomic():
        _ensure_admin(actor)
        locked = Grant.objects.select_for_update(of=("self",)).select_related("dataset").get(pk=grant.pk)
        if locked.source_request_id is not None:
            raise ConflictError(f"Grant #{locked.pk} comes from a request: it is not a standing grant.")
        if not locked.is_in_force():
            raise ConflictError(f"Grant #{locked.pk} already ended.", state=locked.status)
        refuse_if_managed(locked)
        revoke_locked(locked=locked, actor=actor, reason=reason, metadata={"standing": True, **(metadata or {})})
    return locked
