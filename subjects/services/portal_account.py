"""The portal's own account of a subject: the "portal account" step of an erasure.

When an erasure request's e-mail identifier is the e-mail address of a portal user, executing the
request also erases that person from the portal (docs/subjects.md, "The portal's own records"):
their personal grants are revoked and their role memberships ended (governance's offboarding), the
account is switched off and pseudonymised (accounts.services.user_pseudonymise: a new username,
no e-mail or name), and the audit trail shows the pseudonym wherever it showed them, through a
redaction record: the events are never edited, so `audit_verify` still passes. The step's own audit
event holds counts only.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from accounts.services import user_pseudonymise
from audit import services as audit
from governance.errors import DomainError
from governance.services.offboarding import user_offboard

from ..models import IdentifierKind, RequestKind, SubjectRequest


def portal_accounts_matching(identifiers: dict[str, str]) -> list[Any]:
    """The portal users whose e-mail address is the subject's (compared case-insensitively)."""
    email = (identifiers.get(IdentifierKind.EMAIL) or "").strip()
    if not email:
        return []
    return list(get_user_model().objects.filter(email__iexact=email).order_by("pk"))


def portal_accounts_erase(*, request: SubjectRequest, actor: Any, identifiers: dict[str, str]) -> dict[str, int]:
    """Erase the subject's portal accounts (an erasure request only), with one audit event of counts.
    An officer is never erased by their own execution (refused: another officer executes it)."""
    if request.kind != RequestKind.ERASURE:
        return {}
    accounts = portal_accounts_matching(identifiers)
    if not accounts:
        return {}
    counts = {"accounts": 0, "events_redacted": 0, "tokens_revoked": 0, "grants_revoked": 0, "memberships_ended": 0}
    reference = f"Data-subject erasure request #{request.pk}"
    with transaction.atomic():
        for user in accounts:
            if user.pk in (actor.pk, request.approved_by_id, request.created_by_id):
                raise ValueError("The subject is an officer of this request: another officer handles it.")
            off = user_offboard(user=user, actor=actor, reason=reference)
            done = user_pseudonymise(user=user, actor=actor, approved_by=request.approved_by, reference=reference)
            counts["accounts"] += 1
            counts["grants_revoked"] += len(off.grants_revoked)
            counts["memberships_ended"] += len(off.memberships_ended)
            counts["events_redacted"] += done["events_redacted"]
            counts["tokens_revoked"] += done["tokens_revoked"]
        audit.record(action="subject_request.portal_account_done", actor=actor, target=request, metadata=counts)
    return counts


def portal_accounts_step(request: SubjectRequest, actor: Any) -> str:
    """The step as execution runs it (after the datasets): '' when done (or nothing to do), else
    why not, recorded as a failed `subject_request.portal_account` event (nothing changed)."""
    from .requests import identifiers_of

    try:
        portal_accounts_erase(request=request, actor=actor, identifiers=identifiers_of(request))
    except (ValueError, DomainError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        audit.record(
            action="subject_request.portal_account",
            actor=actor,
            target=request,
            outcome="failed",
            reason=f"Portal account not erased: {message}"[:500],
        )
        return f"Portal account not erased: {message}"
    return ""
