"""Reconciliation: repairing drift the way the provisioning engine converges (same locks, verified)."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Q
from django.utils import timezone

from ... import provisioning
from ...models import (
    Dataset,
    DataSource,
    GovernedSchema,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
)
from ...provisioners import pg_packages as pgp
from ...provisioners import postgres as pg
from ..engine.target import apply_and_verify

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from ..locks import object_lock
from .model import (
    OWNER,
    Drift,
    ReconcileResult,
    _Principal,
)
from .portal import _PortalState, _Privs
from .record import _close_fixed, _record_fix_failure


def _desired_now(
    source: DataSource, principal: _Principal, obj: pg.ObjectRef, ds_id: int | None, observed: pg.ObservedState
) -> pg.Desired | None:
    """The desired state of one (principal, object) read again under the object lock (the last
    writer must see the latest truth, as a provisioning job does); None while it is in flight.

    A person or portal role holds its grants through their access packages and leaves every other
    package of the object it was seen in; an access package holds exactly its definition."""
    now = timezone.now()
    is_package = principal.user_id is None and principal.role_id is None
    if is_package:
        if ds_id is None:
            return pg.Desired(principal.name, obj)
        grantee = Q()
    elif principal.user_id is not None:
        grantee = Q(grantee_user_id=principal.user_id)
    else:
        grantee = Q(grantee_role_id=principal.role_id)
    stale = observed.packages_of(principal.name, obj)
    if ds_id is None:  # not governed: the portal's role holds nothing there
        return pg.Desired.through(principal.name, obj, [], stale)
    grants = list(Grant.objects.active(now).filter(grantee, dataset_id=ds_id).values_list("level", "columns", "status"))
    busy = ProvisioningJob.objects.filter(
        grant__in=Grant.objects.filter(grantee, dataset_id=ds_id), status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
    ).exists()
    if busy or any(status == GrantStatus.APPROVED for *_, status in grants):
        return None
    privs_of = _Privs()
    packages = [
        pgp.package(source.role_prefix, source.database, obj, privs_of(level, columns))
        for level, columns, status in grants
        if status == GrantStatus.ACTIVE
    ]
    if is_package:  # the package itself: its definition, held directly
        mine = next((p for p in packages if p.name == principal.name), None)
        if mine is None:
            return pg.Desired(principal.name, obj)
        return pg.Desired(principal.name, obj, mine.privileges.table, mine.privileges.columns)
    return pg.Desired.through(principal.name, obj, packages, stale)


def _lock_key(source: DataSource, obj: pg.ObjectRef) -> str:
    # The portal advisory lock a provisioning job of that object takes (on the target, both hold
    # the plan's table lock).
    return provisioning.lock_key(Dataset(source_id=source.pk, schema=obj.schema, name=obj.name))


def _converge(source: DataSource, desired: pg.Desired, managed: bool, key: str) -> pg.ApplyResult:
    """Plan, apply and verify on the target exactly as a provisioning job does."""
    plan = pgp.plan_converge(desired, managed_principal=managed, database=source.database)
    return apply_and_verify(provisioning.target_for(source), plan, key, lambda conn: pgp.verify(conn, desired))


def _fix_pair(
    source: DataSource,
    principal: _Principal,
    items: list[Drift],
    result: ReconcileResult,
    actor: Any,
    observed: pg.ObservedState,
) -> None:
    first = items[0]
    obj, ds_id = first.obj, first.dataset_id
    assert obj is not None  # memberships go to _fix_membership
    if any(item.privilege == OWNER for item in items):
        error = f"{obj} is owned by {pg.display_name(principal.name)}: a DBA must change its owner"
        _record_fix_failure(source, first, error, result, actor)
        return
    key = _lock_key(source, obj)
    with object_lock(key):
        desired = _desired_now(source, principal, obj, ds_id, observed)
        if desired is None:
            result.skipped += 1  # a job took it over meanwhile: it converges the object itself
            return
        try:
            applied = _converge(source, desired, principal.managed, key)
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, first, exc.message, result, actor)
            return
    _close_fixed(source, (principal.name, obj.schema, obj.name), items, applied, result, actor)


def _fix_orphan_package(
    source: DataSource, items: list[Drift], result: ReconcileResult, actor: Any, observed: pg.ObservedState
) -> None:
    """Revoke what an orphan access package holds and drop it once it has no member (members are
    repaired on their own: they hold privileges no grant gives, and leave the package); one that
    holds nothing on any table is dropped with its members, who get nothing through it."""
    first = items[0]
    held = sorted(observed.privileges.get(first.principal, {}))
    key = json.dumps([source.pk, "package", first.principal])
    plans = [
        pg.Plan.build([pg.revoke_held_statement(first.principal, obj)], [pg.lock_name("table", obj.schema, obj.name)])
        for obj in held
    ]
    if held:
        plans.append(pgp.plan_drop_packages(held[0], [first.principal], database=source.database))
    else:  # it holds nothing (its governed view went with a dropped column): its members lose nothing
        schema = provisioning.governed_schema_of(GovernedSchema.objects.filter(source=source).first())
        statement = pgp.drop_empty_package_statement(first.principal, source.database, [schema])
        plans.append(pg.Plan.build([statement], []))
    try:
        applied = apply_and_verify(
            provisioning.target_for(source),
            pg.Plan.combine(plans),
            key,
            lambda conn: [
                line for found in pg.verify_many(conn, [pg.Desired(first.principal, o) for o in held]) for line in found
            ],
        )
    except pg.ProvisioningError as exc:
        _record_fix_failure(source, first, exc.message, result, actor)
        return
    _close_fixed(source, first.pair, items, applied, result, actor)


def _fix_membership(
    source: DataSource, state: _PortalState, items: list[Drift], result: ReconcileResult, actor: Any
) -> None:
    """Converge one (member, group) membership as a membership job does, under the same lock when the
    group is a portal role (the job's key), otherwise under a key of the two role names."""
    first = items[0]
    member, group = state.principals[first.principal], state.principals.get(first.group)
    role_id = group.role_id if group is not None else None
    portal = (role_id, member.user_id) if role_id is not None and member.user_id is not None else None
    if portal is not None:
        key = json.dumps([source.pk, "membership", *portal])
    else:
        key = json.dumps([source.pk, "membership", member.name, first.group])
    with object_lock(key):
        present = False
        if portal is not None:
            status = _membership_now(source, *portal)
            if status is None:
                result.skipped += 1  # a membership job took it over meanwhile
                return
            present = status
        parts = []
        if present:
            parts += [
                pg.plan_ensure_role(p.name)  # CONNECT comes through the group's packages
                for p in (group, member)
                if p is not None and p.managed
            ]
        try:
            parts.append(pg.plan_membership(member.name, first.group, present))
            applied = _apply_membership(source, pg.Plan.combine(parts), key, member.name, first.group, present)
        except ValueError as exc:  # a name the adapter refuses to plan (e.g. a reserved group to GRANT)
            _record_fix_failure(source, first, str(exc), result, actor)
            return
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, first, exc.message, result, actor)
            return
    _close_fixed(source, first.pair, items, applied, result, actor)


def _membership_now(source: DataSource, role_id: int, user_id: int) -> bool | None:
    """Whether the portal wants `user` in `role`'s group on `source`, read again under the lock;
    None while a membership job of theirs is queued or running there."""
    jobs = ProvisioningJob.objects.filter(
        source=source, action=JobAction.MEMBERSHIP, membership__role_id=role_id, membership__user_id=user_id
    )
    if jobs.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists():
        return None
    if not RoleMembership.objects.active().filter(role_id=role_id, user_id=user_id).exists():
        return False
    has_grants = (
        Grant.objects.active()
        .filter(grantee_role_id=role_id, dataset__source=source, status=GrantStatus.ACTIVE)
        .exists()
    )
    return has_grants or jobs.exists()


def _apply_membership(
    source: DataSource, plan: pg.Plan, key: str, member: str, group: str, present: bool
) -> pg.ApplyResult:
    return apply_and_verify(
        provisioning.target_for(source), plan, key, lambda conn: pg.verify_membership(conn, member, group, present)
    )
