"""JIT credentials: a temporary database login per grant, revealed once, dropped when the grant ends.

Why: many people who are granted access to a table have no login of their own on that database
(the portal grants to a NOLOGIN role that stands for them). An access request can therefore ask for
a *temporary database login* (``AccessRequest.jit_credentials``). When the grant is applied, the
worker creates a LOGIN role ``<prefix>j_<username>_<grant id>`` on the target:

* **member of the grantee's managed principal role**, so it holds what the portal granted to that
  person on that source and nothing else (a person mapped to their own existing login role cannot
  get one: that role holds privileges the portal never granted);
* with ``VALID UNTIL`` = the grant's end, so PostgreSQL itself refuses password logins after it,
  even if the worker that should drop the role is down;
* with a random password (``secrets.token_urlsafe(24)``), sent to the target only as a SCRAM
  verifier (the adapter redacts it from every plan text, job row, audit event and error).

The plaintext is kept on the grant only as a MultiFernet token (``Grant.jit_password_encrypted``)
until the grantee reveals it **once** (:func:`grant_jit_credentials_reveal`), which clears the token
in the same transaction. When the grant ends (revoke, expiry) the revoke job ends the login for good:
NOLOGIN, its open sessions terminated, what it owns dropped, the role dropped, and all of that verified
(:func:`governance.services.revocation.end_login`).

Ordering and retries (a job may run twice: at-least-once delivery, the sweeper, admin Retry):
the password is generated and committed to the grant (token) **before** the role is created on the
target, and every later run re-uses that token, so the password on the target is always the one the
grantee can still reveal. Once revealed, a re-run leaves an intact role alone; only if the role is
gone or altered does it get a fresh password (which the grantee can reveal again, audited
``grant.jit_password_reset``). All target work happens outside portal transactions (house rule 4)
and under the job's per-object lock.
"""

from __future__ import annotations

import logging
import secrets
import shlex
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from .. import crypto, provisioning
from ..backends import backend_for
from ..errors import ConflictError, InvalidInput, NotPermitted
from ..models import Dataset, Grant, GrantStatus, JobAction, ProvisioningJob, SourcePrincipal
from ..provisioners import pg_login
from ..provisioners import postgres as pg
from . import revocation
from .common import refusal_recorded
from .locks import object_lock

log = logging.getLogger(__name__)

ROLE_KIND = "j"  # <prefix>j_<username>_<grant id>, next to <prefix>u_ (users) and <prefix>r_ (roles)


def _new_password() -> str:
    # 32 URL-safe characters (192 bits): printable ASCII, which the SCRAM verifier code requires.
    return secrets.token_urlsafe(24)


def jit_role_name(grant: Grant) -> str:
    """``<prefix>j_<username>_<grant id>``, folded and shortened like every managed name (≤ 63 bytes)."""
    user = grant.grantee_user
    if user is None:
        raise ValueError("JIT credentials are for user grantees only")
    return provisioning.managed_role_name(grant.dataset.source, ROLE_KIND, f"{user.username}_{grant.pk}")


def jit_request_check(*, dataset: Dataset, grantee_user: Any, grantee_role: Any) -> None:
    """Refuse a JIT request that could not be honoured (called by ``access_request_submit``).

    A login is personal: never for a portal Role. It needs a PostgreSQL source the portal provisions.
    And the grantee must not be mapped to their own existing login role there: the JIT role inherits
    its principal's privileges, and an existing login role holds privileges the portal never granted.
    """
    field = "jit_credentials"
    if grantee_role is not None or grantee_user is None:
        raise InvalidInput(
            "A temporary database login is personal: request it for a user, not for a role.", field=field
        )
    source = dataset.source
    if not source.provisions or not backend_for(source).jit_logins:
        raise InvalidInput(
            f"{source.name} is not a PostgreSQL source the portal provisions; it cannot issue a temporary login.",
            field=field,
        )
    mapped = SourcePrincipal.objects.filter(source=source, user=grantee_user, managed=False).first()
    if mapped is not None:
        raise InvalidInput(
            f"{grantee_user.username} already logs in to {source.name} as {mapped.db_role}; "
            "temporary logins are only issued for portal-managed principals.",
            field=field,
        )


def _wants_jit(job: ProvisioningJob, action: str) -> bool:
    """Cheap check on the grant the job already loaded (jit_role is fixed at approval): most jobs
    have no JIT login, and they should not pay a query for it."""
    return job.action == action and job.grant is not None and bool(job.grant.jit_role)


def _load(grant_id: int | None) -> Grant | None:
    if grant_id is None:
        return None
    return Grant.objects.select_related("dataset__source", "grantee_user").get(pk=grant_id)


def _prepare_password(grant_id: int) -> str | None:
    """The password the target must hold, committed to the grant (as a token) before it is used.

    Returns the stored password when there is one (a re-run re-applies the same one), a new one when
    the grant has none yet or its role was dropped, and None when the grantee already revealed it
    (then the target's password must be left alone).
    """
    with transaction.atomic():
        grant = Grant.objects.select_for_update(of=("self",)).get(pk=grant_id)
        if grant.jit_password_encrypted:
            return crypto.decrypt(grant.jit_password_encrypted)
        if grant.jit_revealed_at is not None and grant.jit_dropped_at is None:
            return None
        password = _new_password()
        # A role dropped earlier (e.g. a failed apply, then an admin Retry) is created again: the
        # new password is a new credential to reveal.
        grant.jit_password_encrypted = crypto.encrypt(password)
        grant.jit_revealed_at = None
        grant.jit_dropped_at = None
        grant.save(update_fields=["jit_password_encrypted", "jit_revealed_at", "jit_dropped_at", "updated_at"])
        return password


def _reset_password(grant_id: int, problems: list[str]) -> str:
    """The grantee revealed the password, but the role is gone or altered: issue a new one."""
    password = _new_password()
    with transaction.atomic():
        grant = Grant.objects.select_for_update(of=("self",)).get(pk=grant_id)
        grant.jit_password_encrypted = crypto.encrypt(password)
        grant.jit_revealed_at = None
        grant.save(update_fields=["jit_password_encrypted", "jit_revealed_at", "updated_at"])
        audit.record(
            action="grant.jit_password_reset",
            actor=None,
            target=grant,
            reason="; ".join(problems),
            metadata={"role": grant.jit_role},
        )
    return password


def _verify(conn: Any, grant: Grant, principal: str) -> list[str]:
    return pg.verify_role(conn, grant.jit_role, True, valid_until=grant.ends_at, login=True) + pg.verify_membership(
        conn, grant.jit_role, principal, True
    )


def _verify_but_expiry(conn: Any, grant: Grant, principal: str) -> list[str]:
    return pg.verify_role(conn, grant.jit_role, True, login=True) + pg.verify_membership(
        conn, grant.jit_role, principal, True
    )


def _move_valid_until(conn: Any, grant: Grant, principal: str) -> list[str]:
    """``ALTER ROLE … VALID UNTIL`` the grant's current end, verified and audited. Raises pg errors."""
    result = pg.apply(
        conn,
        pg_login.plan_valid_until(grant.jit_role, grant.ends_at),
        lock_key=_role_lock(grant.jit_role),
        lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
        statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
    )
    problems = _verify(conn, grant, principal)
    if problems:
        raise pg.PermanentError("Verification of the JIT login role failed: " + "; ".join(problems))
    audit.record(
        action="grant.jit_valid_until_moved",
        actor=None,
        target=grant,
        metadata={"role": grant.jit_role, "valid_until": grant.ends_at},
    )
    return list(result.statements)


def _ever_prepared(grant: Grant) -> bool:
    """Whether a password was ever issued: the role is only ever created after that (see above)."""
    return bool(grant.jit_password_encrypted) or grant.jit_revealed_at is not None or grant.jit_dropped_at is not None


def _role_lock(name: str) -> str:
    return pg.lock_name("role", name)


def jit_after_apply(*, job: ProvisioningJob) -> list[str]:
    """After a successful apply: make the grant's JIT login role exist, as planned, and verify it.

    Called by the engine (services/engine/tables.py) inside the job's per-object lock, after the
    converge (so the principal role exists), before the grant is marked Active (so Active means the
    login works).
    Returns the executed statements (secrets redacted); raises pg errors like the converge does.
    """
    if not _wants_jit(job, JobAction.APPLY):
        return []
    grant = _load(job.grant_id)
    if grant is None or not grant.jit_role:
        return []
    if not grant.is_in_force(timezone.now()):
        return []  # ended or revoked meanwhile: its revoke job drops whatever exists
    ref = provisioning.grant_principal(grant)
    if not ref.managed:
        raise pg.PermanentError(
            f"JIT credentials need a portal-managed principal; {ref.db_role} is an existing login role."
        )
    password = _prepare_password(grant.pk)
    target = provisioning.target_for(grant.dataset.source)
    conn = pg.POOL.get(target)
    try:
        if password is None:
            problems = _verify(conn, grant, ref.db_role)
            if not problems:
                return []  # revealed and intact: the grantee's password stays valid
            if not _verify_but_expiry(conn, grant, ref.db_role):
                # Intact but for VALID UNTIL: the grant's end moved. Only the expiry follows; the
                # password the grantee holds keeps working until the new end.
                return _move_valid_until(conn, grant, ref.db_role)
            password = _reset_password(grant.pk, problems)
        plan = pg.plan_login_role(grant.jit_role, password, grant.ends_at, ref.db_role)
        result = pg.apply(
            conn,
            plan,
            lock_key=_role_lock(grant.jit_role),
            lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
        )
        problems = _verify(conn, grant, ref.db_role)
    except pg.TransientError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise
    if problems:
        raise pg.PermanentError("Verification of the JIT login role failed: " + "; ".join(problems))
    return list(result.statements)


def _drop_role(grant: Grant) -> list[str]:
    """End the login for good (NOLOGIN, sessions, owned objects, role) and verify that nothing is
    left (:func:`governance.services.revocation.end_login`). Raises pg errors."""
    target = provisioning.target_for(grant.dataset.source)
    return list(revocation.end_login(target, grant.jit_role).statements)


def jit_login_dropped(grant_id: int, *, reason: str, metadata: dict[str, Any]) -> None:
    """Record that a grant's login role is gone and forget its password (once; later calls record
    nothing). Used by the engine after a revoke and by the reconciler when it ends a leftover."""
    with transaction.atomic():
        grant = Grant.objects.select_for_update(of=("self",)).get(pk=grant_id)
        if grant.jit_dropped_at is not None and not grant.jit_password_encrypted:
            return
        grant.jit_dropped_at = timezone.now()
        grant.jit_password_encrypted = ""
        grant.save(update_fields=["jit_dropped_at", "jit_password_encrypted", "updated_at"])
        audit.record(
            action="grant.jit_dropped",
            actor=None,
            target=grant,
            reason=reason,
            metadata={"role": grant.jit_role, **metadata},
        )


def _mark_dropped(grant_id: int, *, job: ProvisioningJob, reason: str) -> None:
    jit_login_dropped(grant_id, reason=reason, metadata={"job": job.pk, "action": job.action})


def jit_after_revoke(*, job: ProvisioningJob) -> list[str]:
    """After a successful revoke (manual or expiry): drop the JIT login role and record it.

    Always run on the target (``DROP ROLE IF EXISTS`` converges), recorded once. Called inside the
    job's per-object lock; a transient failure makes the revoke job retry, for as long as it takes.
    """
    if not _wants_jit(job, JobAction.REVOKE):
        return []
    grant = _load(job.grant_id)
    if grant is None or not grant.jit_role:
        return []
    if not _ever_prepared(grant):
        return []  # the apply never got as far as the login role: there is nothing to drop
    try:
        statements = _drop_role(grant)
    except pg.PermanentError as exc:
        # The job fails with this error; the grant's own trail says what is left on the target.
        audit.record(
            action="grant.jit_drop_failed",
            actor=None,
            target=grant,
            outcome=Outcome.FAILED,
            reason=exc.message,
            metadata={"role": grant.jit_role, "job": job.pk, "action": job.action},
        )
        raise
    reason = "The grant ended." if grant.revoked_at is None else "The grant was revoked."
    _mark_dropped(grant.pk, job=job, reason=reason)
    return statements


def jit_after_apply_failed(*, job: ProvisioningJob) -> None:
    """An apply failed for good: drop a JIT login role an earlier attempt may have created.

    Called by the engine (services/engine/failures.py) after the job was recorded as failed (outside
    its portal transaction and its locks). It takes the same per-object lock as jobs, so that an
    admin Retry racing with it cannot have its new role dropped. Best effort: if the target is
    unreachable the failure is logged and audited, and the role stays bounded by ``VALID UNTIL``;
    the grant's expiry still queues a revoke job, which drops it for good.
    """
    grant = _load(job.grant_id)
    if grant is None or job.action != JobAction.APPLY or not grant.jit_role:
        return
    if not _ever_prepared(grant) or (grant.jit_dropped_at is not None and not grant.jit_password_encrypted):
        return  # no role was ever created, or it is already gone
    with object_lock(provisioning.lock_key(grant.dataset)):
        grant.refresh_from_db()
        if grant.status == GrantStatus.ACTIVE:
            return  # a retry succeeded meanwhile: its role is the grantee's now
        try:
            _drop_role(grant)
        except pg.ProvisioningError as exc:
            log.error("Could not drop JIT login role of grant %s after a failed apply: %s", grant.pk, exc.message)
            audit.record(
                action="grant.jit_drop_failed",
                actor=None,
                target=grant,
                outcome=Outcome.FAILED,
                reason=exc.message,
                metadata={"role": grant.jit_role, "job": job.pk},
            )
            return
        _mark_dropped(grant.pk, job=job, reason="Provisioning failed.")


def grant_jit_credentials_reveal(*, grant: Grant | int, actor: Any) -> str:
    """Give the grantee the JIT password, once, while the grant is active. Returns the plaintext.

    The grant row is locked, so two clicks at once reveal it once and the second gets a
    ConflictError; the token is cleared in the same transaction as the ``grant.jit_revealed`` audit
    event (which never contains the password). Refusals are recorded as denied.
    """
    pk = grant if isinstance(grant, int) else grant.pk
    target = grant if isinstance(grant, Grant) else (Grant, grant)
    with refusal_recorded(action="grant.jit_reveal", actor=actor, target=target), transaction.atomic():
        try:
            locked = Grant.objects.select_for_update(of=("self",)).select_related("dataset__source").get(pk=pk)
        except Grant.DoesNotExist as exc:
            raise InvalidInput(f"There is no grant #{pk}.", field="grant") from exc
        if actor is None or not actor.is_active or locked.grantee_user_id != actor.pk:
            raise NotPermitted("Only the grantee can see the password of a temporary database login.")
        if not locked.jit_role:
            raise InvalidInput(f"Grant #{locked.pk} has no temporary database login.")
        if locked.jit_revealed_at is not None:
            raise ConflictError(
                f"The password of grant #{locked.pk} was already revealed at {locked.jit_revealed_at.isoformat()}; "
                "it is shown only once.",
                state=locked.status,
            )
        now = timezone.now()
        if locked.status != GrantStatus.ACTIVE or not locked.is_in_force(now):
            raise ConflictError(
                f"Grant #{locked.pk} is not active ({locked.get_status_display()}); its login cannot be used.",
                state=locked.status,
            )
        if not locked.jit_password_encrypted:
            raise ConflictError(f"The login of grant #{locked.pk} is not ready yet.", state=locked.status)
        password = crypto.decrypt(locked.jit_password_encrypted)
        locked.jit_password_encrypted = ""
        locked.jit_revealed_at = now
        locked.save(update_fields=["jit_password_encrypted", "jit_revealed_at", "updated_at"])
        audit.record(
            action="grant.jit_revealed",
            actor=actor,
            target=locked,
            metadata={"role": locked.jit_role, "source": locked.dataset.source.name, "valid_until": locked.ends_at},
        )
    return password


def _conninfo_value(value: str) -> str:
    # libpq connection-string quoting: single quotes, with backslash and quote escaped.
    if value and all(c.isalnum() or c in "._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def jit_psql_command(grant: Grant) -> str:
    """How to connect: a ``psql`` command line for the grant's login (no password in it)."""
    source = grant.dataset.source
    parts = {"host": source.host, "port": str(source.port), "dbname": source.database, "user": grant.jit_role}
    conninfo = " ".join(f"{key}={_conninfo_value(value)}" for key, value in parts.items() if value)
    return "psql " + shlex.quote(conninfo)
