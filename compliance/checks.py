"""The checks behind the compliance posture's controls (compliance.controls lists them), each
computed from the portal's live state: a status (pass / fail / not applicable) and one line that
names what fails. Reads only, in a fixed number of queries whatever the number of sources, grants
or findings (names are sampled with a window count, never fetched one by one)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Window
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.roles import GOVERNANCE_ADMINS, SECURITY_OFFICERS
from audit.models import AuditEvent, AuditVerification, Outcome
from governance import crypto
from governance.backends import backend_for, has_backend
from governance.models import (
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DatasetGroupObjectPermission,
    DatasetUserObjectPermission,
    DataSource,
    DriftFinding,
    Grant,
    GrantStatus,
    RoleMembership,
    SensitiveTag,
    TagStatus,
)
from governance.policy import RESTRICTED_SLUG
from governance.selectors.keys import stored_secrets
from governance.services.engine.sweep import overdue_revocations

from .credentials import CredentialAge, credential_ages, credentials_rotated
from .reviews import ReviewAnnotator, review_annotator

PASS = "pass"  # noqa: S105 - a status, not a password
FAIL = "fail"
NOT_APPLICABLE = "not_applicable"
STATUS_LABELS = {PASS: "Pass", FAIL: "Fail", NOT_APPLICABLE: "Not applicable"}
SAMPLE = 5  # names shown in a reason; the rest are counted


@dataclass
class _State:
    """What several controls share, read once."""

    now: dt.datetime
    _sources: list[DataSource] | None = None
    _restricted_id: int | None = None
    _credentials: list[CredentialAge] | None = None

    @property
    def sources(self) -> list[DataSource]:
        if self._sources is None:
            self._sources = list(
                DataSource.objects.only(
                    "name",
                    "kind",
                    "sslmode",
                    "aws_endpoint_url",
                    "password_ref",
                    "password_encrypted",
                    "provisioning_enabled",
                    "created_at",
                    "credential_rotation_days",
                    "credential_changed_at",
                    "rotate_secret_ref",
                ).order_by("name")
            )
        return self._sources

    @property
    def credentials(self) -> list[CredentialAge]:
        if self._credentials is None:
            self._credentials = credential_ages(self.sources, self.now)
        return self._credentials

    @property
    def restricted_id(self) -> int:
        """The Restricted classification's id, for the admin's list filters (0: there is none)."""
        if self._restricted_id is None:
            found = Classification.objects.filter(slug=RESTRICTED_SLUG).values_list("pk", flat=True).first()
            self._restricted_id = found or 0
        return self._restricted_id


def _sample(queryset: QuerySet[Any], *fields: str) -> tuple[int, list[tuple[Any, ...]]]:
    """(how many rows, the first SAMPLE of them as `fields`) in one query: the window count is
    taken before the LIMIT."""
    rows = list(queryset.annotate(_total=Window(Count("pk"))).values_list(*fields, "_total")[:SAMPLE])
    return (rows[0][-1] if rows else 0), [row[:-1] for row in rows]


def _listed(names: Iterable[str], total: int) -> str:
    shown = list(names)
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _ago(then: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days ago"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours ago"
    return f"{seconds // 60} minutes ago"


def _day(at: dt.datetime) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M")


# --- the checks: each returns (status, reason) ------------------------------------------------------


def tls_verified(state: _State) -> tuple[str, str]:
    if not state.sources:
        return NOT_APPLICABLE, "No data source is registered."
    problems = []
    for source in state.sources:
        problem = backend_for(source).transport_problem(source) if has_backend(source) else f"kind {source.kind}"
        if problem:
            problems.append(f"{source.name} ({problem})")
    if problems:
        return FAIL, (
            f"{len(problems)} of {len(state.sources)} sources do not verify the server's certificate: "
            + _listed(problems[:SAMPLE], len(problems))
        )
    return PASS, f"All {len(state.sources)} sources verify the server's certificate (verify-ca / verify-full, HTTPS)."


def keys_rotated(state: _State) -> tuple[str, str]:
    limit = settings.COMPLIANCE_KEY_ROTATION_MAX_DAYS
    try:
        service = crypto.key_service()  # "KMS key", "Vault Transit key"; "" for the local keys
    except ImproperlyConfigured as exc:
        return FAIL, str(exc)
    kms = bool(service)
    # With a key service each secret names the key that wraps it (read them all); without, whether any exists.
    secrets = list(stored_secrets()) if kms else []
    stored = secrets or (
        not kms
        and (
            any(s.password_encrypted for s in state.sources)
            or Grant.objects.exclude(jit_password_encrypted="").exists()
        )
    )
    if not stored:
        return NOT_APPLICABLE, "No secret is stored encrypted (source passwords are held by reference)."
    try:
        key = crypto.current_key()  # KMS: the ARN its alias names now; Transit: "mount/name:vLATEST"
    except ImproperlyConfigured as exc:
        return FAIL, f"The key that encrypts cannot be named: {exc}"
    # With a key service, each secret names the key (and version) that wraps it: all must be under the current one.
    off = [f"{what} ({under or 'FIELD_ENCRYPTION_KEYS'})" for what, _, under in secrets if under != key]
    if kms and off:
        return FAIL, (
            f"{len(off)} of {len(secrets)} stored secrets are not under {service} {key} (manage.py rewrap_secrets): "
            + _listed(off[:SAMPLE], len(off))
        )
    # When stored secrets were first re-encrypted under the key that encrypts now: a rotation that
    # re-encrypts under the same key again is no rotation.
    first = (
        AuditEvent.objects.filter(action="encryption_keys.rotated", outcome=Outcome.SUCCESS, metadata__key=key)
        .order_by("id")
        .values_list("occurred_at", flat=True)
        .first()
    )
    if first is None:
        return FAIL, (
            f"No rotation to the current key ({key}) is recorded: stored secrets may still be encrypted "
            "under older keys (manage.py rotate_encryption_keys)."
        )
    if first < state.now - dt.timedelta(days=limit):
        since = f"{_day(first)}, {_ago(first, state.now)}"
        return FAIL, f"The current key ({key}) has encrypted since {since} (limit {limit} days)."
    under = f"All {len(secrets)} stored secrets are under {service} {key}; r" if kms else "R"
    return PASS, f"{under}otated to key {key} on {_day(first)}, {_ago(first, state.now)} (limit {limit} days)."


def _approvers_and_admins() -> QuerySet[User]:
    approve_direct = DatasetUserObjectPermission.objects.filter(
        user=OuterRef("pk"), permission__codename="approve_access"
    )
    approve_group = DatasetGroupObjectPermission.objects.filter(
        group__user=OuterRef("pk"), permission__codename="approve_access"
    )
    duty = User.groups.through.objects.filter(
        user_id=OuterRef("pk"), group__name__in=[SECURITY_OFFICERS, GOVERNANCE_ADMINS]
    )
    return User.objects.filter(is_active=True).filter(
        Q(is_superuser=True) | Exists(duty) | Exists(approve_direct) | Exists(approve_group)
    )


def mfa_required(state: _State) -> tuple[str, str]:
    if not settings.MFA_REQUIRED:
        return FAIL, (
            "MFA_REQUIRED is off: the admin site, Confidential and Restricted decisions and password "
            "reveals need no second factor."
        )
    how = "an authenticator, or MFA asserted by the identity provider" if settings.OIDC_ENABLED else "an authenticator"
    without = _approvers_and_admins().exclude(Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)))
    total, rows = _sample(without.order_by("username"), "username")
    reason = (
        f"MFA_REQUIRED is on: the admin site, Confidential and Restricted decisions and password reveals "
        f"need a second factor ({how})."
    )
    if total:
        names = _listed((r[0] for r in rows), total)
        reason += f" Without an authenticator of their own, so held back until they verify one: {names}."
    return PASS, reason


def audit_verified(state: _State) -> tuple[str, str]:
    hours = settings.COMPLIANCE_AUDIT_VERIFY_MAX_AGE_HOURS
    run = AuditVerification.objects.filter(finished_at__isnull=False).order_by("-finished_at").first()
    if run is None or run.finished_at is None:
        return FAIL, "The audit trail has never been verified (manage.py audit_verify, or the hourly task)."
    if not run.ok:
        first = run.problems[0]["message"] if run.problems and isinstance(run.problems[0], dict) else "problems"
        return FAIL, f"The last verification ({_day(run.finished_at)}) did not pass: {first}"
    if run.finished_at < state.now - dt.timedelta(hours=hours):
        return (
            FAIL,
            f"Last verified intact {_ago(run.finished_at, state.now)} ({_day(run.finished_at)}; limit {hours} h).",
        )
    return PASS, (
        f"Verified intact {_ago(run.finished_at, state.now)}: {run.checked} events up to seal {run.head_seq} "
        f"(limit {hours} h)."
    )


def audit_retention(state: _State) -> tuple[str, str]:
    phi = Dataset.objects.present().filter(
        Exists(
            ColumnTag.objects.filter(
                column__dataset=OuterRef("pk"),
                column__is_present=True,
                tag=SensitiveTag.PHI,
                status=TagStatus.CONFIRMED,
            )
        )
        | Exists(Column.objects.filter(dataset=OuterRef("pk"), is_present=True, inherited_tags__contains=["phi"]))
    )
    total, rows = _sample(phi.order_by("schema", "name"), "schema", "name")
    if not total:
        return NOT_APPLICABLE, "No dataset holds confirmed PHI."
    where = _listed((f"{schema}.{name}" for schema, name in rows), total)
    needed = settings.COMPLIANCE_PHI_AUDIT_RETENTION_DAYS
    kept = settings.AUDIT_RETENTION_DAYS
    if kept < needed:
        return FAIL, f"PHI in {where}; the audit trail is kept {kept} days (AUDIT_RETENTION_DAYS), below {needed}."
    locked = settings.AUDIT_ANCHOR_S3_RETENTION_DAYS
    if settings.AUDIT_ANCHOR_S3_BUCKET and 0 < locked < needed:
        return FAIL, (
            f"PHI in {where}; the witness anchors that prove the trail are locked only {locked} days "
            f"(AUDIT_ANCHOR_S3_RETENTION_DAYS), below {needed}."
        )
    archived = settings.AUDIT_ARCHIVE_S3_RETENTION_DAYS
    if settings.AUDIT_ARCHIVE_S3_BUCKET and 0 < archived < needed:
        return FAIL, (
            f"PHI in {where}; the audit archives in S3 are locked only {archived} days "
            f"(AUDIT_ARCHIVE_S3_RETENTION_DAYS), below {needed}."
        )
    return PASS, f"PHI in {where}; the audit trail is kept {kept} days (at least {needed})."


def no_superuser_login(state: _State) -> tuple[str, str]:
    sources = [s for s in state.sources if has_backend(s) and backend_for(s).observes_login and s.provisions]
    if not sources:
        return NOT_APPLICABLE, "No source where the portal provisions with a database login."
    hours = settings.COMPLIANCE_LOGIN_CHECK_MAX_AGE_HOURS
    # What the reconciler read of the portal's login on each source, in its latest successful run.
    latest = {
        row["target_id"]: row
        for row in AuditEvent.objects.filter(
            action="reconcile.run",
            outcome=Outcome.SUCCESS,
            target_type="governance.datasource",
            target_id__in=[str(s.pk) for s in sources],
        )
        .order_by("target_id", "-id")
        .distinct("target_id")
        .values("target_id", "occurred_at", "metadata")
    }
    problems = []
    for source in sources:
        row = latest.get(str(source.pk))
        login = (row or {}).get("metadata", {}).get("login") if row else None
        if row is None:
            problems.append(f"{source.name} (never reconciled)")
        elif row["occurred_at"] < state.now - dt.timedelta(hours=hours):
            problems.append(f"{source.name} (last read {_ago(row['occurred_at'], state.now)})")
        elif not isinstance(login, dict):
            problems.append(f"{source.name} (login not read)")
        elif login.get("superuser") or login.get("bypassrls"):
            what = "a superuser" if login.get("superuser") else "BYPASSRLS"
            problems.append(f"{source.name} (login {login.get('name', '?')} is {what})")
    if problems:
        return FAIL, "The portal's login is a superuser, or not known not to be, on: " + _listed(
            problems[:SAMPLE], len(problems)
        )
    return PASS, f"The portal's login on each of {len(sources)} sources is no superuser (read by the reconciler)."


def _restricted_in_force(now: dt.datetime) -> QuerySet[Grant]:
    return Grant.objects.active(now).filter(dataset__classification__slug=RESTRICTED_SLUG)


def restricted_grants_end(state: _State) -> tuple[str, str]:
    if not Dataset.objects.filter(classification__slug=RESTRICTED_SLUG).exists():
        return NOT_APPLICABLE, "No dataset is Restricted."
    open_ended_member = RoleMembership.objects.active(state.now).filter(role=OuterRef("grantee_role"), ends_at=None)
    # Beyond the classification's longest duration from now, or held through a role by a member
    # without an end: either way the access has no end the policy set.
    unbounded = _restricted_in_force(state.now).filter(
        Q(ends_at__gt=state.now + F("dataset__classification__max_duration"))
        | (Q(grantee_role__isnull=False) & Exists(open_ended_member))
    )
    total, rows = _sample(
        unbounded.order_by("pk"),
        "pk",
        "dataset__schema",
        "dataset__name",
        "grantee_user__username",
        "grantee_role__name",
    )
    if total:
        names = (f"#{pk} {schema}.{name} for {user or 'role ' + str(role)}" for pk, schema, name, user, role in rows)
        return FAIL, f"{total} Restricted grants have no end within policy: {_listed(names, total)}."
    return PASS, "Every Restricted grant in force ends within its classification's longest duration."


def restricted_reviewed(state: _State) -> tuple[str, str]:
    annotate, why = review_annotator()
    if annotate is None:
        return NOT_APPLICABLE, why
    return reviewed_within(state, annotate)


def reviewed_within(state: _State, annotate: ReviewAnnotator) -> tuple[str, str]:
    """The control once review facts exist: `annotate` adds `last_reviewed_at` (compliance/reviews.py)."""
    days = settings.COMPLIANCE_REVIEW_MAX_AGE_DAYS
    restricted = Dataset.objects.present().filter(classification__slug=RESTRICTED_SLUG)
    stale = annotate(restricted).filter(
        Q(last_reviewed_at__isnull=True) | Q(last_reviewed_at__lt=state.now - dt.timedelta(days=days))
    )
    total, rows = _sample(stale.order_by("schema", "name"), "schema", "name")
    if total:
        return FAIL, f"{total} Restricted datasets not reviewed in {days} days: " + _listed(
            (f"{s}.{n}" for s, n in rows), total
        )
    return PASS, f"Every Restricted dataset was reviewed within {days} days."


def secrets_by_reference(state: _State) -> tuple[str, str]:
    if not state.sources:
        return NOT_APPLICABLE, "No data source is registered."
    stored = [s.name for s in state.sources if s.password_encrypted]
    if stored:
        return FAIL, f"{len(stored)} sources keep their password in the portal's database: " + _listed(
            stored[:SAMPLE], len(stored)
        )
    return PASS, f"No source keeps a password in the portal's database ({len(state.sources)} sources)."


def credentials_fresh(state: _State) -> tuple[str, str]:
    return credentials_rotated(state.credentials)


def drift_closed(state: _State) -> tuple[str, str]:
    hours = settings.COMPLIANCE_DRIFT_MAX_AGE_HOURS
    old = DriftFinding.objects.open().filter(found_at__lt=state.now - dt.timedelta(hours=hours))
    total, rows = _sample(old.order_by("found_at", "pk"), "source__name", "detail")
    if total:
        return FAIL, f"{total} drift findings open for more than {hours} h: " + _listed(
            (f"{name}: {detail}" for name, detail in rows), total
        )
    return PASS, f"No drift finding has been open for more than {hours} h."


def no_overdue_revocation(state: _State) -> tuple[str, str]:
    grace = dt.timedelta(seconds=settings.REVOCATION_OVERDUE_SECONDS)
    jobs_total, jobs = _sample(overdue_revocations(state.now).order_by("queued_at"), "pk", "grant_id")
    # A grant past its end (or revoked) that the portal still counts as active: its revocation
    # never ran, so nothing checked that the privilege is gone.
    ended = Grant.objects.filter(status__in=[GrantStatus.ACTIVE, GrantStatus.APPROVED]).filter(
        Q(ends_at__lt=state.now - grace) | Q(revoked_at__lt=state.now - grace)
    )
    grants_total, grants = _sample(ended.order_by("ends_at"), "pk")
    if jobs_total or grants_total:
        parts = []
        if jobs_total:
            parts.append(
                f"{jobs_total} revocation jobs overdue ("
                + _listed((f"job #{pk} for grant #{g}" for pk, g in jobs), jobs_total)
                + ")"
            )
        if grants_total:
            parts.append(
                f"{grants_total} ended grants still active ("
                + _listed((f"#{r[0]}" for r in grants), grants_total)
                + ")"
            )
        return FAIL, "; ".join(parts) + "."
    return PASS, f"Every revocation finished within {settings.REVOCATION_OVERDUE_SECONDS} s of being due."
