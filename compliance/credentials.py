"""The age of the portal's own credential on each source, for the posture page (a selector).

A stored password is the portal's to rotate (every `credential_rotation_days`); a referenced one
(env:, aws-sm:, vault:) is rotated in its store, and its age as that store last told the portal is
held to COMPLIANCE_CREDENTIAL_MAX_DAYS. A failed rotation no later one resolved fails the control
too. A login leased from Vault (vault-db:) is "dynamic": its age is the newest lease's (as the
process that took it noted it), with no limit of the portal's (the Vault role's max TTL bounds it).
Two queries whatever the number of sources (the sources are read once by the posture).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count

from governance.models import CredentialRotation, DataSource
from governance.secrets import dynamic_role


@dataclass(frozen=True)
class CredentialAge:
    source: str
    held: str  # "stored", the reference's scheme: "env", "aws-sm", "vault", or "dynamic" (vault-db:)
    changed_at: dt.datetime | None
    age_days: int | None  # None: the store cannot tell (an environment variable)
    limit_days: int | None  # None: never rotated, no limit
    open_failures: int
    rotated_by_portal: bool

    @property
    def overdue(self) -> bool:
        return self.limit_days is not None and (self.age_days is None or self.age_days > self.limit_days)


def credential_ages(sources: Iterable[DataSource], now: dt.datetime) -> list[CredentialAge]:
    sources = [s for s in sources if s.password_ref or s.password_encrypted]
    failures = dict(
        CredentialRotation.objects.open_findings()
        .values_list("source_id")
        .annotate(n=Count("pk"))
        .values_list("source_id", "n")
    )
    rows = []
    for source in sources:
        held = source.password_ref.split(":", 1)[0] if source.password_ref else "stored"
        by_portal = not source.password_ref or source.rotate_secret_ref
        changed: dt.datetime | None
        limit: int | None
        if dynamic_role(source.password_ref):  # a new login per Vault lease: nothing to rotate
            held, by_portal, changed, limit = "dynamic", False, source.credential_changed_at, None
        elif by_portal:  # the portal rotates it (stored, or an aws-sm secret it may write)
            changed = source.credential_changed_at or source.created_at
            limit = source.credential_rotation_days or None
        else:
            changed, limit = source.credential_changed_at, settings.COMPLIANCE_CREDENTIAL_MAX_DAYS
        age = None if changed is None else max(0, (now - changed).days)
        rows.append(CredentialAge(source.name, held, changed, age, limit, failures.get(source.pk, 0), by_portal))
    return rows


def credentials_rotated(ages: list[CredentialAge]) -> tuple[str, str]:
    """(status, reason) of the control: pass, fail or not applicable (no credential held)."""
    if not ages:
        return "not_applicable", "No source has a password (stored or by reference)."
    failed = [a for a in ages if a.open_failures]
    overdue = [a for a in ages if a.overdue]
    if failed or overdue:
        parts = []
        if failed:
            parts.append("failed rotation open on " + ", ".join(a.source for a in failed[:5]))
        if overdue:
            parts.append(
                "older than the limit: "
                + ", ".join(
                    f"{a.source} ({'unknown age' if a.age_days is None else f'{a.age_days} days'}"
                    f", limit {a.limit_days})"
                    for a in overdue[:5]
                )
            )
        return "fail", "; ".join(parts) + "."
    unrotated = sum(1 for a in ages if a.limit_days is None)
    note = f" ({unrotated} never rotated by choice)" if unrotated else ""
    return "pass", f"Every one of {len(ages)} source credentials is within its rotation period{note}."
