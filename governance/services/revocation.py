"""Revocation that leaves nothing behind: ending a JIT login, and a grantee's sessions on revoke.

Used by the revoke job (:mod:`governance.services.jit`, :mod:`governance.services.engine.tables`) and
by the reconciler's repair of leftover logins (:mod:`governance.services.reconcile.jit`). The target
work is in :mod:`governance.provisioners.pg_revoke`; this module orders it, verifies it and turns
what it finds into one-line errors. Nothing here runs inside a portal transaction.

Ending a JIT login (:func:`end_login`), in this order:

1. ``ALTER ROLE … NOLOGIN``, committed: no new session can start from here on;
2. every session of the login is terminated, waiting for each backend to exit;
3. ``GRANT login TO CURRENT_USER; DROP OWNED BY login; DROP ROLE login`` in one transaction: what the
   login created in the governed database is dropped with it (a temporary login's objects are
   temporary: a copy of revoked data must not outlive the revocation);
4. verified by the role's oid: no role, no session, no ``pg_shdepend`` entry left.

A step that fails leaves the login unable to log in (step 1 is committed first). A role that still
owns objects or holds privileges in *another* database of the cluster cannot be dropped by the
portal (``DROP OWNED`` works per database): that is a :class:`PermanentError` naming the databases,
and a DBA must run ``DROP OWNED BY`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit import services as audit

from .. import provisioning
from ..backends import backend_for
from ..models import Grant, GrantStatus
from ..provisioners import pg_revoke
from ..provisioners import postgres as pg

_DEPENDENT_OBJECTS = "2BP01"


@dataclass(frozen=True)
class Ended:
    """What ending a login did on the target."""

    statements: tuple[str, ...]
    sessions_terminated: int
    elapsed_ms: float


def _apply(conn: Any, plan: pg.Plan, name: str) -> pg.ApplyResult:
    return pg.apply(
        conn,
        plan,
        lock_key=pg.lock_name("role", name),
        lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
        statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
    )


def end_login(target: pg.Target, name: str) -> Ended:
    """NOLOGIN, terminate, drop owned, drop, verify (see the module). Raises pg errors; a failed
    verification or a role kept by another database is a PermanentError naming what is left."""
    conn = pg.POOL.get(target)
    try:
        oid = pg_revoke.role_oid(conn, name)
        disabled = _apply(conn, pg_revoke.plan_disable_login(name), name)
        terminated = pg_revoke.terminate_sessions(conn, name, wait_ms=settings.TARGET_TERMINATE_WAIT_MS)
        try:
            dropped = _apply(conn, pg_revoke.plan_drop_login(name), name)
        except pg.PermanentError as exc:
            if exc.sqlstate != _DEPENDENT_OBJECTS or oid is None:
                raise
            left = [str(dep) for dep in pg_revoke.dependencies(conn, oid)]
            if not left:  # a terminated session's temporary objects were still being removed: retry
                raise pg.TransientError(exc.message, sqlstate=exc.sqlstate) from exc
            raise pg.PermanentError(
                f"The login {pg.display_name(name)} cannot log in any more, but it cannot be dropped: it has "
                + "; ".join(left)
                + ". What the portal's role cannot remove (objects in other databases, privileges another role "
                "granted) a DBA must remove (DROP OWNED BY / REVOKE there); the revoke then succeeds on retry.",
                sqlstate=exc.sqlstate,
            ) from exc
        problems = pg_revoke.verify_login_gone(conn, name, oid)
    except pg.TransientError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise
    if problems:
        raise pg.PermanentError(
            f"Verification failed after ending the login {pg.display_name(name)}: " + "; ".join(problems)
        )
    statements = [*disabled.statements]
    if terminated:
        statements.append(f"-- terminated {terminated} session(s) of {pg.display_name(name)}")
    statements += dropped.statements
    return Ended(tuple(statements), terminated, disabled.elapsed_ms + dropped.elapsed_ms)


def terminates_sessions(grant: Grant) -> bool:
    """Whether revoking ``grant`` must end its grantee's open sessions on the source: its dataset's
    classification asks for it, and the source's kind can (PostgreSQL)."""
    dataset = grant.dataset
    classification = dataset.classification
    return bool(classification.terminate_sessions_on_revoke and backend_for(dataset.source).terminates_sessions)


def grantee_sessions_end(*, grant: Grant, principal: str, job_id: int | None) -> list[str]:
    """After a revoke was applied and verified: end the sessions of every login holding the
    grantee principal's privileges in the source's database, when the classification asks for it
    and no other grant in force still gives the grantee this dataset. Audited with the count
    (``grant.sessions_terminated``), also when it is zero. Raises pg errors (the job retries)."""
    if not terminates_sessions(grant) or grant.status == GrantStatus.FAILED:
        return []  # (a failed grant never gave access: its clean-up revoke ends nobody's work)
    still = provisioning.active_grants_for(
        dataset=grant.dataset, grantee_user=grant.grantee_user, grantee_role=grant.grantee_role, including=None
    )
    if any(g.pk != grant.pk for g in still):
        return []  # the grantee keeps this data through another grant: its sessions may go on
    target = provisioning.target_for(grant.dataset.source)
    conn = pg.POOL.get(target)
    try:
        count = pg_revoke.terminate_member_sessions(conn, principal, wait_ms=settings.TARGET_TERMINATE_WAIT_MS)
    except pg.TransientError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise
    audit.record(
        action="grant.sessions_terminated",
        actor=None,
        target=grant,
        metadata={
            "count": count,
            "principal": principal,
            "source": grant.dataset.source.name,
            "classification": grant.dataset.classification.slug,
            "job": job_id,
            "at": timezone.now(),
        },
    )
    return [f"-- terminated {count} session(s) of the logins of {pg.display_name(principal)}"]
