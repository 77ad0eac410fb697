"""Reconciling JIT login roles: what the target has under the source's ``<prefix>j_`` names against
the grants in force that asked for a temporary login (:mod:`governance.services.jit`).

Part of every PostgreSQL reconcile run (:func:`governance.services.reconcile.reconcile_source`):
one catalog query lists the roles named like the portal's JIT logins, with their LOGIN attribute,
VALID UNTIL and open sessions. Two findings:

* ``leftover_login`` — a role no grant in force explains (its revoke never finished, it was left by
  a failure, or someone made one behind the portal's back). The repair ends it as a revoke does
  (:func:`governance.services.revocation.end_login`: NOLOGIN, its sessions terminated, what it owns
  dropped, DROP ROLE, verified), and records the grant's login as dropped when it belongs to one.
* ``login_expiry`` — the login of a grant in force whose ``VALID UNTIL`` is not the grant's end (an
  ``ALTER ROLE … VALID UNTIL`` by hand). The repair moves it back, verified; the password stays.

A login whose grant is still being applied (approved, not yet active) or has a provisioning job
queued or running is in flight: the engine owns it, and it is neither reported nor repaired. Roles
are cluster-wide and two sources of one cluster may share a prefix: a login whose grant is on another
source is that source's business (a role no grant explains at all is reported by each). A
finding is stored with the login as ``principal``, empty ``object_schema``/``object_name`` and
``LOGIN`` or ``VALID UNTIL`` as privilege. A source with an empty role prefix is not looked at
(``j_`` alone would match roles the portal never made).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from ... import provisioning
from ...models import DataSource, DriftKind, Grant, GrantStatus, JobStatus, ProvisioningJob
from ...provisioners import pg_login, pg_revoke
from ...provisioners import postgres as pg
from .. import revocation
from ..engine.target import apply_and_verify
from ..jit import ROLE_KIND, jit_login_dropped
from ..locks import object_lock
from .model import Drift, ReconcileFailed, ReconcileResult
from .record import _close_fixed, _record_fix_failure

KINDS = frozenset({DriftKind.LEFTOVER_LOGIN, DriftKind.LOGIN_EXPIRY})
LOGIN = "LOGIN"
VALID_UNTIL = "VALID UNTIL"


def prefix(source: DataSource) -> str:
    return f"{source.role_prefix}{ROLE_KIND}_" if source.role_prefix else ""


def observe(source: DataSource) -> list[pg_revoke.ObservedLogin]:
    """The target's JIT-named roles; ReconcileFailed when the target cannot be read."""
    if not prefix(source):
        return []
    try:
        target = provisioning.target_for(source)
    except ImproperlyConfigured as exc:
        raise ReconcileFailed(f"Cannot read {source.name}: {exc}") from None
    try:
        return pg_revoke.observe_logins(pg.POOL.get(target), prefix(source))
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise ReconcileFailed(f"Cannot read {source.name}: {exc.message}") from None


def _grants(names: Collection[str]) -> dict[str, Grant]:
    """The grant behind each login name, whatever its source: roles are cluster-wide, and two sources
    on one cluster may share a role prefix (the grant id in the name makes it unique)."""
    rows = Grant.objects.filter(jit_role__in=list(names)).select_related("dataset").order_by("pk")
    return {grant.jit_role: grant for grant in rows}


def _busy(grants: Collection[Grant], now: Any) -> set[str]:
    """Logins the engine owns right now: grants being applied, or with a job queued or running."""
    jobs = set(
        ProvisioningJob.objects.filter(
            grant_id__in=[g.pk for g in grants], status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).values_list("grant_id", flat=True)
    )
    return {g.jit_role for g in grants if g.pk in jobs or (g.status == GrantStatus.APPROVED and g.is_in_force(now))}


def _wanted(grant: Grant | None, now: Any) -> bool:
    """Whether the grant's login should exist: the grant is active, in force, its login not dropped."""
    return (
        grant is not None
        and grant.status == GrantStatus.ACTIVE
        and grant.jit_dropped_at is None
        and grant.is_in_force(now)
    )


def diff(source: DataSource, observed: list[pg_revoke.ObservedLogin], now: Any) -> tuple[list[Drift], set[str]]:
    """The login findings, and the logins in flight (skipped: their open findings stay open). A login
    whose grant is on another source (same cluster, same prefix) is that source's business."""
    if not observed:
        return [], set()
    grants = _grants([login.name for login in observed])
    busy = _busy(grants.values(), now)
    out: list[Drift] = []
    for login in observed:
        name = login.name
        grant = grants.get(name)
        if name in busy or (grant is not None and grant.dataset.source_id != source.pk):
            continue
        who = pg.display_name(name)
        if not _wanted(grant, now):
            state = "can log in" if login.can_login else "cannot log in"
            detail = f"leftover login {who}: no grant in force explains it ({state}, {login.sessions} open session(s))"
            out.append(Drift(DriftKind.LEFTOVER_LOGIN, name, None, "", LOGIN, None, detail))
            continue
        assert grant is not None
        if login.valid_until != grant.ends_at:
            # psycopg2 reads 'infinity' as datetime.max; NULL (no VALID UNTIL) means the same.
            until = (
                "infinity"
                if login.valid_until is None or login.valid_until.year == 9999
                else login.valid_until.isoformat()
            )
            detail = f"login {who} is valid until {until}, its grant ends {grant.ends_at.isoformat()}"
            out.append(Drift(DriftKind.LOGIN_EXPIRY, name, None, "", VALID_UNTIL, grant.dataset_id, detail))
    return out, busy


def fix(source: DataSource, items: list[Drift], result: ReconcileResult, actor: Any) -> None:
    """Repair one login's findings under the lock its grant's jobs take (or one of the name)."""
    first = items[0]
    name = first.principal
    grant = _grants([name]).get(name)
    key = provisioning.lock_key(grant.dataset) if grant is not None else json.dumps([source.pk, "jit", name])
    with object_lock(key):
        now = timezone.now()
        if grant is not None:
            grant = Grant.objects.select_related("dataset").get(pk=grant.pk)  # again, under the lock
            if _busy([grant], now):
                result.skipped += 1  # a job took it over meanwhile: it converges the login itself
                return
        wanted = _wanted(grant, now)
        target = provisioning.target_for(source)
        try:
            if first.kind == DriftKind.LEFTOVER_LOGIN and not wanted:
                ended = revocation.end_login(target, name)
                applied = pg.ApplyResult("", "", ended.statements, (), ended.elapsed_ms)
            elif first.kind == DriftKind.LOGIN_EXPIRY and wanted:
                assert grant is not None
                ends_at = grant.ends_at
                applied = apply_and_verify(
                    target,
                    pg_login.plan_valid_until(name, ends_at),
                    pg.lock_name("role", name),
                    lambda conn: pg.verify_role(conn, name, True, valid_until=ends_at),
                )
            else:
                result.skipped += 1  # the grant changed since the run looked: the next run sees it anew
                return
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, first, exc.message, result, actor)
            return
    if first.kind == DriftKind.LEFTOVER_LOGIN and grant is not None:
        _mark_dropped(grant.pk, result)
    _close_fixed(source, first.pair, items, applied, result, actor)


def _mark_dropped(grant_id: int, result: ReconcileResult) -> None:
    """The login of an ended grant was ended by the reconciler: record it on the grant (once)."""
    jit_login_dropped(grant_id, reason="The reconciler ended a leftover login.", metadata={"run": result.run_id})
