"""The controls of the compliance posture page, each computed from the portal's live state.

A selector: it reads, never writes, and costs a fixed number of queries whatever the number of
sources, grants or findings (names are sampled with a window count, never fetched one by one).
Each check returns a status (pass / fail / not applicable) and one line that names what fails.
docs/compliance.md maps every control to SOC 2, HIPAA and GDPR, and says what each one reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from django.urls import reverse
from django.utils import timezone

from .break_glass import break_glass_reviewed
from .checks import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    STATUS_LABELS,
    _State,
    audit_retention,
    audit_verified,
    credentials_fresh,
    drift_closed,
    keys_rotated,
    mfa_required,
    no_overdue_revocation,
    no_superuser_login,
    restricted_grants_end,
    restricted_reviewed,
    reviewed_within,
    secrets_by_reference,
    tls_verified,
)
from .credentials import CredentialAge

__all__ = [
    "CONTROLS",
    "FAIL",
    "NOT_APPLICABLE",
    "PASS",
    "Control",
    "Posture",
    "Result",
    "_State",
    "compliance_posture",
    "reviewed_within",
]


@dataclass(frozen=True)
class Result:
    """One control as computed now."""

    control: Control
    status: str
    reason: str
    evidence_url: str

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def key(self) -> str:
        return self.control.key

    @property
    def title(self) -> str:
        return self.control.title

    @property
    def soc2(self) -> tuple[str, ...]:
        return self.control.soc2

    @property
    def hipaa(self) -> tuple[str, ...]:
        return self.control.hipaa

    @property
    def gdpr(self) -> tuple[str, ...]:
        return self.control.gdpr

    @property
    def evidence_label(self) -> str:
        return self.control.evidence_label


@dataclass
class Posture:
    generated_at: dt.datetime
    controls: list[Result]
    counts: dict[str, int] = field(default_factory=dict)
    credentials: list[CredentialAge] = field(default_factory=list)  # each source's credential age


# --- the catalogue of controls -----------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    key: str
    title: str
    soc2: tuple[str, ...]
    hipaa: tuple[str, ...]
    gdpr: tuple[str, ...]
    check: Callable[[_State], tuple[str, str]]
    evidence: str  # admin URL name
    evidence_query: str  # "{restricted}" stands for the Restricted classification's id
    evidence_label: str


CONTROLS: tuple[Control, ...] = (
    Control(
        "tls_verified",
        "TLS with certificate verification to every source",
        ("CC6.1", "CC6.7"),
        ("164.312(e)(1)", "164.312(e)(2)(ii)"),
        ("Art. 5(1)(f)", "Art. 32"),
        tls_verified,
        "admin:governance_datasource_changelist",
        "",
        "Data sources",
    ),
    Control(
        "keys_rotated",
        "Field encryption keys rotated within the limit",
        ("CC6.1",),
        ("164.312(a)(2)(iv)",),
        ("Art. 32",),
        keys_rotated,
        "admin:audit_auditevent_changelist",
        "action=encryption_keys.rotated",
        "Key rotations in the audit trail",
    ),
    Control(
        "mfa_required",
        "MFA required for approvers and admins",
        ("CC6.1",),
        ("164.312(d)",),
        ("Art. 32",),
        mfa_required,
        "admin:accounts_user_changelist",
        "",
        "Users",
    ),
    Control(
        "audit_verified",
        "Audit chain verified within the limit",
        ("CC7.2", "CC4.1"),
        ("164.312(b)", "164.312(c)(1)"),
        ("Art. 5(1)(f)", "Art. 30"),
        audit_verified,
        "admin:audit_auditverification_changelist",
        "",
        "Audit verifications",
    ),
    Control(
        "audit_retention",
        "Audit retention of at least 6 years where PHI is present",
        ("CC7.2",),
        ("164.316(b)(2)(i)", "164.312(b)"),
        ("Art. 30",),
        audit_retention,
        "admin:governance_columntag_changelist",
        "tag__exact=phi&status__exact=confirmed",
        "PHI tags",
    ),
    Control(
        "no_superuser_login",
        "No superuser provisioning login",
        ("CC6.3", "CC6.1"),
        ("164.308(a)(4)(ii)(B)", "164.308(a)(3)(ii)(A)"),
        ("Art. 25", "Art. 32"),
        no_superuser_login,
        "admin:audit_auditevent_changelist",
        "action=reconcile.run",
        "Reconcile runs in the audit trail",
    ),
    Control(
        "restricted_grants_end",
        "No Restricted grant without an end",
        ("CC6.2", "CC6.3"),
        ("164.308(a)(4)(ii)(C)",),
        ("Art. 5(1)(c)", "Art. 25"),
        restricted_grants_end,
        "admin:governance_grant_changelist",
        "in_force=yes&dataset__classification__id__exact={restricted}",
        "Restricted grants in force",
    ),
    Control(
        "restricted_reviewed",
        "Every Restricted dataset reviewed within 90 days",
        ("CC6.2", "CC6.3"),
        ("164.308(a)(4)(ii)(C)", "164.308(a)(1)(ii)(D)"),
        ("Art. 32(1)(d)",),
        restricted_reviewed,
        "admin:governance_dataset_changelist",
        "classification__id__exact={restricted}",
        "Restricted datasets",
    ),
    Control(
        "secrets_by_reference",
        "Source secrets held by reference",
        ("CC6.1",),
        ("164.312(a)(2)(iv)",),
        ("Art. 32",),
        secrets_by_reference,
        "admin:governance_datasource_changelist",
        "",
        "Data sources",
    ),
    Control(
        "credentials_rotated",
        "Portal credential on each source rotated within its period",
        ("CC6.1",),
        ("164.308(a)(5)(ii)(D)",),
        ("Art. 32",),
        credentials_fresh,
        "admin:governance_credentialrotation_changelist",
        "",
        "Credential rotations",
    ),
    Control(
        "drift_closed",
        "No open drift older than a day",
        ("CC7.2", "CC6.1"),
        ("164.308(a)(1)(ii)(D)",),
        ("Art. 32(1)(b)",),
        drift_closed,
        "admin:governance_driftfinding_changelist",
        "state=open",
        "Open drift findings",
    ),
    Control(
        "no_overdue_revocation",
        "No overdue revocation",
        ("CC6.2", "CC6.3"),
        ("164.308(a)(3)(ii)(C)",),
        ("Art. 5(1)(f)", "Art. 32"),
        no_overdue_revocation,
        "admin:governance_provisioningjob_changelist",
        "overdue=revocations",
        "Overdue revocations",
    ),
    Control(
        "break_glass_reviewed",
        "Every break-glass use reviewed within its deadline",
        ("CC6.2", "CC7.3"),
        ("164.312(a)(2)(ii)", "164.308(a)(1)(ii)(D)"),
        ("Art. 32",),
        break_glass_reviewed,
        "admin:breakglass_breakglassuse_changelist",
        "reviewed_at__isempty=1",
        "Break-glass uses not reviewed",
    ),
)


def compliance_posture(*, now: dt.datetime | None = None) -> Posture:
    """Every control, computed now (a fixed number of queries)."""
    state = _State(now=now or timezone.now())
    results = []
    for control in CONTROLS:
        status, reason = control.check(state)
        query = control.evidence_query
        if "{restricted}" in query:
            query = query.format(restricted=state.restricted_id)
        url = reverse(control.evidence) + (f"?{query}" if query else "")
        results.append(Result(control=control, status=status, reason=reason, evidence_url=url))
    counts = {status: sum(1 for r in results if r.status == status) for status in (PASS, FAIL, NOT_APPLICABLE)}
    return Posture(generated_at=state.now, controls=results, counts=counts, credentials=state.credentials)
