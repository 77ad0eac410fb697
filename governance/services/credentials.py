"""Rotation of the portal's own password on each PostgreSQL source (docs/security.md#credential-rotation).

The order, and why:

1. A new random password is generated and stored encrypted on a *pending* CredentialRotation row
   (committed) before the target is touched. The row is also the lock: one pending rotation per
   source (a partial unique constraint).
2. A fresh session logs in with the current password and keeps open; the role sets its own new
   password there (``ALTER ROLE ... PASSWORD '<SCRAM verifier>'``: the plaintext never reaches the
   server).
3. A *new* connection logs in with the new password. If it cannot, the open session puts the old
   password back (as a verifier too), and the rotation fails: finding, notification, metric.
4. Only then is the new password written where the source keeps it (the encrypted field), in the
   same transaction as the audit event that resolves earlier findings; the pending secret is
   cleared.
5. The pooled connections of this process that logged in with the old password are dropped; other
   processes' pools retire theirs on their next job, when the source's password no longer matches
   (governance.provisioners.postgres.ConnectionPool).

If the process dies between 2 and 4, the pending row still holds the new password: the next
rotation of the source first settles it (:func:`_settle_pending`): a login with the pending
password promotes it, else the old one is kept and the attempt marked failed.

A source whose password is a reference is written in its store instead (step 4) when the store is
one the portal writes (aws-sm:, vault:; governance.secrets.write) and the source allows it
(`rotate_secret_ref`); otherwise the portal does not rotate it and reports its age
(:func:`datasource_credential_ages_refresh`).
A source whose login is leased from Vault (vault-db:) has nothing to rotate: each lease is a new
login (governance.dynamic_credentials).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import Kind as Notice
from notifications.services.outbox import notify
from observability import instruments

from .. import crypto, dynamic_credentials, secrets
from ..backends import backend_for, has_backend
from ..errors import ConflictError
from ..models import CredentialRotation, DataSource, RotationStatus, RotationTrigger
from ..provisioners import pg_credentials as creds
from ..provisioners import postgres as pg
from ..provisioning import target_for
from ..secrets import SecretUnavailable
from .common import sealed

log = logging.getLogger(__name__)


def rotatable(source: DataSource) -> str:
    """Why the portal may not rotate `source`'s credential itself ("" when it may)."""
    if not (has_backend(source) and backend_for(source).rotates_own_credential):
        return f"The portal does not rotate its own credential on {source.name} (kind {source.kind})."
    if secrets.dynamic_role(source.password_ref):
        lease = dynamic_credentials.current(source.pk)
        ttl = f"{int(lease.ttl)} s" if lease else "as the Vault role sets it"
        return (
            f"{source.name}'s login is dynamic, from Vault ({source.password_ref}): a new login per lease, lease TTL"
            f" {ttl}; there is nothing to rotate."
        )
    if source.password_ref:
        if source.rotate_secret_ref and secrets.writable(source.password_ref):
            return ""
        return (
            f"{source.name}'s password is a reference ({source.password_ref.split(':', 1)[0]}:) the portal may not"
            " write; rotate it in its store (its age is reported)."
        )
    if not source.password_encrypted:
        return f"{source.name} has no stored password to rotate."
    return ""


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.CREDENTIAL_ROTATION_LEASE_SECONDS)


def _fail(rotation: CredentialRotation, source: DataSource, error: str, *, keep_pending: bool = False) -> None:
    """Record a failed rotation: the row (an open finding), its audit event, a notification."""
    with transaction.atomic():
        rotation.status = RotationStatus.FAILED
        rotation.finished_at = timezone.now()
        rotation.error = error[:2000]
        if not keep_pending:
            rotation.pending_secret = ""
        rotation.save(update_fields=["status", "finished_at", "error", "pending_secret"])
        audit.record(
            action="datasource.credential_rotation_failed",
            actor=rotation.actor,
            target=source,
            outcome=Outcome.FAILED,
            reason=rotation.error,
            metadata={"rotation": rotation.pk, "trigger": rotation.trigger, "old_password_kept": not keep_pending},
        )
        notify(Notice.ROTATION_FAILED, actor=rotation.actor, source=source.pk, rotation=rotation.pk)
    instruments.credential_rotations.labels(outcome="failed").inc()
    log.warning("Rotation of the portal's credential on %s failed: %s", source.name, rotation.error)


def _promote(rotation: CredentialRotation, source: DataSource, password: str) -> None:
    """Store the new password where the source keeps it, with the audit event, in one transaction.
    A referenced secret was written to its store before (`_write_reference`): only its date here."""
    now = timezone.now()
    with transaction.atomic():
        locked = DataSource.objects.select_for_update().get(pk=source.pk)
        if not locked.password_ref:
            locked.password_encrypted = crypto.encrypt(password)
        locked.credential_changed_at = now
        locked.save(update_fields=["password_encrypted", "credential_changed_at", "updated_at"])
        resolved = CredentialRotation.objects.open_findings().filter(source=source).update(resolved_at=now)
        rotation.status = RotationStatus.ROTATED
        rotation.finished_at = now
        rotation.pending_secret = ""
        rotation.save(update_fields=["status", "finished_at", "pending_secret"])
        audit.record(
            action="datasource.credential_rotated",
            actor=rotation.actor,
            target=source,
            metadata={
                "rotation": rotation.pk,
                "trigger": rotation.trigger,
                "held": locked.password_ref.split(":", 1)[0] if locked.password_ref else "stored",
                "findings_resolved": resolved,
            },
        )
    source.password_encrypted, source.credential_changed_at = locked.password_encrypted, now
    instruments.credential_rotations.labels(outcome="rotated").inc()


def _settle_pending(source: DataSource) -> None:
    """A pending rotation older than its lease (its process died): promote its password if the
    target takes it, else keep the old one and mark the attempt failed."""
    stale = CredentialRotation.objects.filter(
        source=source, status=RotationStatus.PENDING, started_at__lt=timezone.now() - _lease()
    ).first()
    if stale is None:
        return
    target = target_for(source)
    pending = crypto.decrypt(stale.pending_secret)
    try:
        creds.logs_in(target, pending)
    except pg.ProvisioningError:
        _fail(stale, source, "The rotation did not finish; the target still takes the old password.")
        return
    if source.password_ref:
        try:
            secrets.write(source.password_ref, pending)
        except SecretUnavailable as exc:
            log.error("A pending rotation of %s cannot be written to its secret yet: %s", source.name, exc)
            return  # still pending: the target has it, the store does not; the next rotation tries again
    _promote(stale, source, pending)


def datasource_credentials_rotate(
    *,
    source: DataSource,
    actor: Any = None,
    trigger: str = RotationTrigger.MANUAL,
) -> CredentialRotation:
    """Rotate the portal's password on `source` (see the module's docstring for the order).

    Raises ConflictError when the source cannot be rotated by the portal or a rotation is already
    under way; a failure on the target returns the failed rotation (an open finding), never raises.
    """
    why_not = rotatable(source)
    if why_not:
        raise ConflictError(why_not)
    _settle_pending(source)
    source.refresh_from_db()
    try:
        target = target_for(source)
    except SecretUnavailable as exc:
        raise ConflictError(str(exc)) from None
    old = target.password
    new = creds.new_password()
    try:
        with transaction.atomic():
            rotation = CredentialRotation.objects.create(
                source=source,
                trigger=trigger,
                actor=actor if getattr(actor, "pk", None) else None,
                started_at=timezone.now(),
                pending_secret=sealed(new, field="password", what="The new password"),
            )
    except IntegrityError:
        raise ConflictError(f"A rotation of {source.name}'s credential is already under way.") from None

    try:
        creds.check_password(old)
        session = creds.open_session(target)
    except pg.ProvisioningError as exc:
        _fail(rotation, source, f"Could not log in with the current password: {exc.message}")
        return rotation
    try:
        try:
            creds.set_own_password(session, target.user, new, secret_values=(old,))
        except pg.ProvisioningError as exc:
            _fail(rotation, source, f"The target refused the new password: {exc.message}")
            return rotation
        try:
            creds.logs_in(target, new)
        except pg.ProvisioningError as exc:
            _put_back(
                rotation, source, session, target, old, f"A new connection with the new password failed: {exc.message}"
            )
            return rotation
        if source.password_ref:
            try:
                secrets.write(source.password_ref, new)
            except SecretUnavailable as exc:
                _put_back(rotation, source, session, target, old, f"Writing the new password failed: {exc}")
                return rotation
            try:
                _promote(rotation, source, new)
            except Exception:  # the store holds it: leave the rotation pending, the next one promotes it
                log.exception("Recording the rotated credential of %s failed; it stays pending", source.name)
            pg.POOL.discard(target)
            return rotation
        try:
            _promote(rotation, source, new)
        except Exception as exc:  # the portal's database refused: the target must not keep a password nobody holds
            log.exception("Storing the rotated credential of %s failed", source.name)
            _put_back(rotation, source, session, target, old, f"Storing the new password failed: {type(exc).__name__}")
            return rotation
    finally:
        creds.close(session)
    # Only now is the old password forgotten: this process's connections that used it are closed.
    pg.POOL.discard(target)
    return rotation


def _put_back(
    rotation: CredentialRotation, source: DataSource, session: Any, target: pg.Target, old: str, error: str
) -> None:
    """Set the old password again through the session that still works, then record the failure.
    If even that fails, the target keeps the new password and the pending row keeps it too."""
    try:
        # The server's acknowledgement is the proof: a new login to check it could be turned away
        # for the very reason the new password's check was (a connection limit, an outage).
        creds.set_own_password(session, target.user, old)
    except pg.ProvisioningError as exc:
        _fail(
            rotation,
            source,
            f"{error}. Putting the old password back failed too ({exc.message}): the target has the new"
            " password, kept encrypted on this rotation; rotate again to settle it.",
            keep_pending=True,
        )
        return
    _fail(rotation, source, error)


def datasource_credentials_rotate_due(*, now: dt.datetime | None = None) -> dict[str, int]:
    """The beat task's work: rotate every source whose credential is older than its period."""
    now = now or timezone.now()
    candidates = DataSource.objects.filter(credential_rotation_days__gt=0).order_by("pk")
    due = [
        s
        for s in candidates
        if not rotatable(s)
        and (credential_age(s, now=now) or dt.timedelta(0)) >= dt.timedelta(days=s.credential_rotation_days)
    ]
    counts = {"rotated": 0, "failed": 0, "skipped": 0}
    for source in due:
        try:
            rotation = datasource_credentials_rotate(source=source, trigger=RotationTrigger.SCHEDULED)
        except ConflictError:
            counts["skipped"] += 1
            continue
        counts["rotated" if rotation.status == RotationStatus.ROTATED else "failed"] += 1
    return counts


def datasource_credential_ages_refresh() -> int:
    """Read when each referenced secret last changed from its store (Secrets Manager's
    LastChangedDate, Vault's updated_time; an environment variable has none) and keep it as the
    source's `credential_changed_at`, for the posture page. An observation, like a sync's
    `last_synced_at`: no audit event. Returns how many sources it updated."""
    from ..secrets import changed_at

    updated = 0
    for source in DataSource.objects.exclude(password_ref="").order_by("pk"):
        try:
            when = changed_at(source.password_ref)
        except SecretUnavailable as exc:
            log.warning("The age of %s's secret is unknown: %s", source.name, exc)
            continue
        if when is not None and when != source.credential_changed_at:
            DataSource.objects.filter(pk=source.pk).update(credential_changed_at=when)
            updated += 1
    return updated


def credential_age(source: DataSource, *, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How old the portal's credential on `source` is, as far as it knows (None: unknown)."""
    rotated_here = not source.password_ref or source.rotate_secret_ref
    changed = source.credential_changed_at or (source.created_at if rotated_here else None)
    return None if changed is None else (now or timezone.now()) - changed
