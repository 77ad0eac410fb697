"""Reconciliation: compare what the portal decided with what a PostgreSQL target really holds.

`reconcile_source()` reads the DIRECT table and column privileges of every role the portal manages
on a source (one catalog query through `pg.observe`, plus one for ownership), diffs them with the
grants in force, records the differences as `DriftFinding` rows and, when asked, repairs them the
way a provisioning job converges a (principal, object): under the same portal advisory lock, in one
target transaction, verified afterwards.

Order of work (house rule 4, no network inside a portal transaction):

1. read the portal side in a fixed number of queries (principals, grants in force, ended grants,
   jobs in flight, datasets), whatever the number of grants: everything is grouped in Python;
2. observe the target with no portal transaction open;
3. diff in memory;
4. one portal transaction: lock the source row (two runs of one source write one after the other),
   close open findings no longer observed (`gone`), open the new ones, audit the run;
5. with `fix`: per affected (principal, object), converge and verify on the target, then close its
   findings as `fixed` and audit each, in a short transaction per object.

What counts as desired, and why:

* Grants in force (`Grant.objects.active()`) with status `active` are the desired state.
* A (principal, dataset) with a grant in force still `approved`, or with a provisioning job queued or
  running, is *in flight*: the provisioning engine owns it right now. It is skipped (neither reported
  nor repaired) so that the reconciler never races a job, and never applies a grant the engine has not
  checked against its approved plan digest ("plan changed, re-approval needed").
* Grants in force whose provisioning `failed` are not desired: the engine refused them. Privileges
  they would give show up as `unexpected`.
* A privilege held beyond the desired set is `expired_but_present` when a grant of the same principal
  on the same dataset that has ended (expired, revoked, or past its end) would have given it: the
  revocation did not reach the target. Otherwise it is `unexpected` (an out-of-band GRANT), also on
  tables the portal does not govern at all.
* Mapped existing login roles (`SourcePrincipal.managed = False`) belong to people, not to the
  portal: only their privileges on governed objects (a Dataset row) are compared.
* An object OWNED by a principal is not compared privilege by privilege (an owner holds everything
  implicitly and can grant itself anything back). Ownership by a portal-managed role is reported as an
  `unexpected OWNER` finding that the reconciler cannot repair (a DBA must change the owner);
  ownership by a mapped login role is the person's own business and ignored.
* Schema USAGE is not compared: the engine grants it and never revokes it (another table of the
  schema may still need it), so it carries no drift signal of its own.
* Role memberships are compared too. Desired: each active RoleMembership whose role holds an active
  grant in force on the source, or that a membership job ever converged there, puts the member's
  principal in the role's principal. Any other direct membership of a managed principal (e.g. an
  out-of-band `GRANT pg_read_all_data TO …`, or a portal group after the membership ended) is
  `unexpected`; a mapped login role is only compared on the portal's own group roles. A membership
  with a membership job queued or running is in flight and skipped. JIT login roles are members of
  their grantee's principal by design: their memberships are not compared, the roles themselves are
  (`governance.services.reconcile_jit`: leftover logins, a hand-edited VALID UNTIL). A membership finding
  is stored with privilege `MEMBER`, an empty `object_schema` and the group role in `object_name`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.roles import administers_sources
from audit import services as audit
from audit.models import Outcome

from .. import provisioning
from ..backends import Converges, backend_for, has_backend
from ..errors import ConflictError, DomainError, NotPermitted
from ..models import (
    Dataset,
    DataSource,
    DriftFinding,
    DriftKind,
    DriftResolution,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
    SourcePrincipal,
)
from ..provisioners import pg_packages as pgp
from ..provisioners import postgres as pg
from ..selectors.catalog import provisioned_sources
from . import publishing
from .common import refusal_recorded

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from .locks import object_lock
from .provisioning import apply_and_verify

log = logging.getLogger(__name__)

OWNER = "OWNER"  # the pseudo-privilege of an ownership finding
MEMBER = "MEMBER"  # the pseudo-privilege of a membership finding (the group is its object_name)
_KIND_ORDER = {
    DriftKind.MISSING: 0,
    DriftKind.UNEXPECTED: 1,
    DriftKind.EXPIRED_BUT_PRESENT: 2,
    DriftKind.DIRECT: 3,
    DriftKind.ORPHAN_PACKAGE: 4,
}

# (column or None for the table, privilege): one entry of a direct ACL, as verify() compares them.
Pair = tuple[str | None, str]
# (principal, schema, object name): the unit the engine converges, locks and the fixer repairs;
# (member, "", group) for a membership.
PairKey = tuple[str, str, str]
# (member principal, group principal): one direct role membership on the target.
Membership = tuple[str, str]
# The identity of an open finding (see the drift_finding_open_unique constraint).
FindingKey = tuple[str, str, str, str, str, str]


class ReconcileFailed(DomainError):
    """The target could not be observed (unreachable, credentials, catalog query failure)."""

    code = "reconcile_failed"
    status = 502


@dataclass(frozen=True)
class _Principal:
    """A role the portal manages on the source, and the portal subject it stands for."""

    name: str
    managed: bool
    user_id: int | None
    role_id: int | None


@dataclass(frozen=True)
class Drift:
    """One difference observed in this run (not yet a row). A membership drift has no `obj`: its
    `group` is the role `principal` is (missing) or should not be (unexpected) a direct member of."""

    kind: str
    principal: str
    obj: pg.ObjectRef | None
    column: str
    privilege: str
    dataset_id: int | None
    detail: str
    group: str = ""

    @property
    def object_schema(self) -> str:
        return self.obj.schema if self.obj is not None else ""

    @property
    def object_name(self) -> str:
        return self.obj.name if self.obj is not None else self.group

    @property
    def key(self) -> FindingKey:
        return (self.principal, self.object_schema, self.object_name, self.column, self.privilege, self.kind)

    @property
    def pair(self) -> PairKey:
        return (self.principal, self.object_schema, self.object_name)

    @property
    def where(self) -> str:
        if self.obj is not None:
            return str(self.obj)
        return f"membership in {pg.display_name(self.group)}" if self.group else "its login"


@dataclass
class ReconcileResult:
    """What one run of one source observed and did. `clean`: no drift remains after the run."""

    source: str
    run_id: uuid.UUID
    fix: bool
    drift: list[Drift] = field(default_factory=list)
    opened: int = 0  # findings opened by this run
    gone: int = 0  # open findings this run no longer observed
    fixed: int = 0  # findings repaired (and verified) by this run
    skipped: int = 0  # (principal, object) pairs left to the provisioning engine (in flight)
    errors: list[str] = field(default_factory=list)  # repairs that failed, one line each
    fixed_keys: set[FindingKey] = field(default_factory=set)
    principals: int = 0
    elapsed_ms: float = 0.0
    # Warnings about the target's set-up rather than drift (who may connect where): not findings,
    # since no grant can repair them; a DBA must act (docs/security.md).
    posture: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Observed drift per kind (every kind present, zeros included)."""
        out = {kind.value: 0 for kind in DriftKind}
        for item in self.drift:
            out[item.kind] += 1
        return out

    @property
    def remaining(self) -> int:
        return sum(1 for item in self.drift if item.key not in self.fixed_keys)

    @property
    def clean(self) -> bool:
        return self.remaining == 0

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n}" for kind, n in self.counts.items())
        text = f"{len(self.drift)} drift ({counts}); {self.opened} new, {self.gone} gone"
        if self.fix:
            text += f", {self.fixed} fixed"
        if self.skipped:
            text += f", {self.skipped} in flight skipped"
        if self.errors:
            text += f", {len(self.errors)} repair(s) failed"
        if self.posture:
            text += f", {len(self.posture)} posture warning(s)"
        return text + ("; clean" if self.clean else f"; {self.remaining} remaining")

    def lines(self) -> list[str]:
        """One line per observed finding, marked when this run fixed it."""
        return [item.detail + (" [fixed]" if item.key in self.fixed_keys else "") for item in self.drift]


# --------------------------------------------------------------------------------------------
# Portal side: everything in a fixed number of queries
# --------------------------------------------------------------------------------------------


@dataclass
class _PortalState:
    principals: dict[str, _Principal]
    # (principal, dataset id) -> the privileges of each grant in force with status active
    desired: dict[tuple[str, int], list[pg.Privileges]]
    # (principal, dataset id) -> what grants that ended would have given
    ended: dict[tuple[str, int], set[Pair]]
    in_flight: set[tuple[str, int]]
    dataset_ref: dict[int, pg.ObjectRef]
    dataset_id: dict[tuple[str, str], int]
    # Desired direct memberships (member principal, group principal) on the source.
    members: set[Membership] = field(default_factory=set)
    # Memberships with a membership job queued or running on the source: the engine owns them.
    members_in_flight: set[Membership] = field(default_factory=set)
    # JIT login roles of grants in force (members of their grantee's principal by design).
    jit_roles: set[str] = field(default_factory=set)
    # Access packages the grants in force (status active) are held through: name -> dataset id.
    packages: dict[str, int] = field(default_factory=dict)

    def is_package(self, name: str) -> bool:
        principal = self.principals.get(name)
        return principal is not None and principal.user_id is None and principal.role_id is None


class _Privs:
    """`pg.privileges_for_level` memoised: thousands of grants share a handful of (level, columns)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, tuple[str, ...]], pg.Privileges] = {}

    def __call__(self, level: str, columns: Iterable[str] | None) -> pg.Privileges:
        key = (level, tuple(sorted(columns or ())))
        privs = self._cache.get(key)
        if privs is None:
            privs = self._cache[key] = pg.privileges_for_level(level, key[1]).normalized()
        return privs


def _pairs(privs: pg.Privileges) -> set[Pair]:
    out: set[Pair] = {(None, p) for p in privs.table}
    for column, column_privs in privs.columns.items():
        out |= {(column, p) for p in column_privs}
    return out


class _Namer:
    """The target role of a grantee: its SourcePrincipal row, or the managed name (as principal_for)."""

    def __init__(self, source: DataSource, rows: Iterable[_Principal]) -> None:
        self.source = source
        self.by_user: dict[int, _Principal] = {}
        self.by_role: dict[int, _Principal] = {}
        self.all: dict[str, _Principal] = {}
        for row in rows:
            self._add(row)

    def _add(self, principal: _Principal) -> _Principal:
        if principal.user_id is not None:
            self.by_user[principal.user_id] = principal
        else:
            assert principal.role_id is not None
            self.by_role[principal.role_id] = principal
        self.all.setdefault(principal.name, principal)
        return principal

    def of(self, user_id: int | None, role_id: int | None, username: str | None, slug: str | None) -> _Principal:
        if user_id is not None:
            found = self.by_user.get(user_id)
            if found is None:
                name = provisioning.managed_role_name(self.source, "u", username or "")
                found = self._add(_Principal(name, True, user_id, None))
            return found
        found = self.by_role.get(role_id) if role_id is not None else None
        if found is None:
            name = provisioning.managed_role_name(self.source, "r", slug or "")
            found = self._add(_Principal(name, True, None, role_id))
        return found


def _read_portal(source: DataSource, now: Any) -> _PortalState:
    """Seven queries, independent of the number of grants, memberships, principals and datasets."""
    rows = SourcePrincipal.objects.filter(source=source).values_list("db_role", "managed", "user_id", "role_id")
    namer = _Namer(source, (_Principal(*row) for row in rows))
    privs_of = _Privs()
    grantee = ("grantee_user_id", "grantee_role_id", "grantee_user__username", "grantee_role__slug")

    desired: dict[tuple[str, int], list[pg.Privileges]] = defaultdict(list)
    in_flight: set[tuple[str, int]] = set()
    roles_with_grants: set[int] = set()
    jit_roles: set[str] = set()
    dataset_ref, ids_by_ref = _datasets(source)
    packages: dict[str, int] = {}
    package_names: dict[tuple[int, pg.Privileges], str] = {}
    in_force = (
        Grant.objects.active(now)
        .filter(dataset__source=source, status__in=[GrantStatus.ACTIVE, GrantStatus.APPROVED])
        .order_by()
        .values_list(*grantee, "dataset_id", "level", "columns", "status", "jit_role", "jit_dropped_at")
    )
    for user_id, role_id, username, slug, dataset_id, level, columns, status, jit_role, jit_dropped in in_force:
        principal = namer.of(user_id, role_id, username, slug)
        if jit_role and jit_dropped is None:
            jit_roles.add(jit_role)
        privs = privs_of(level, columns)
        ref = dataset_ref.get(dataset_id)
        package_name = None
        if ref is not None:
            package_name = package_names.get((dataset_id, privs))
            if package_name is None:
                package_name = pgp.package_name(source.role_prefix, source.database, ref, privs)
                package_names[(dataset_id, privs)] = package_name
            packages[package_name] = dataset_id
        if status == GrantStatus.APPROVED:
            in_flight.add((principal.name, dataset_id))
            if package_name is not None:
                in_flight.add((package_name, dataset_id))  # its job creates or changes the package
        else:
            desired[(principal.name, dataset_id)].append(privs)
            if role_id is not None:
                roles_with_grants.add(role_id)

    ended: dict[tuple[str, int], set[Pair]] = defaultdict(set)
    ended_rows = (
        Grant.objects.filter(dataset__source=source)
        .filter(
            Q(revoked_at__isnull=False) | Q(ends_at__lte=now) | Q(status__in=[GrantStatus.EXPIRED, GrantStatus.REVOKED])
        )
        .order_by()
        .values_list(*grantee, "dataset_id", "level", "columns")
        .distinct()
    )
    for user_id, role_id, username, slug, dataset_id, level, columns in ended_rows:
        principal = namer.of(user_id, role_id, username, slug)
        ended[(principal.name, dataset_id)] |= _pairs(privs_of(level, columns))

    jobs = (
        ProvisioningJob.objects.filter(grant__dataset__source=source, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .order_by()
        .values_list(
            "grant__grantee_user_id",
            "grant__grantee_role_id",
            "grant__grantee_user__username",
            "grant__grantee_role__slug",
            "grant__dataset_id",
        )
        .distinct()
    )
    busy_datasets: set[int] = set()
    for user_id, role_id, username, slug, dataset_id in jobs:
        in_flight.add((namer.of(user_id, role_id, username, slug).name, dataset_id))
        busy_datasets.add(dataset_id)
    # A job converging a dataset may create, change or drop its packages meanwhile.
    in_flight |= {(name, ds) for name, ds in packages.items() if ds in busy_datasets}

    members, members_in_flight = _read_memberships(source, now, namer, roles_with_grants)
    principals = dict(namer.all)
    for name in packages:
        principals.setdefault(name, _Principal(name, True, None, None))
    for (dataset_id, privs), name in package_names.items():
        desired[(name, dataset_id)] = [privs]
    return _PortalState(
        principals,
        dict(desired),
        dict(ended),
        in_flight,
        dataset_ref,
        ids_by_ref,
        members,
        members_in_flight,
        jit_roles,
        packages,
    )


def _datasets(source: DataSource) -> tuple[dict[int, pg.ObjectRef], dict[tuple[str, str], int]]:
    dataset_ref: dict[int, pg.ObjectRef] = {}
    ids_by_ref: dict[tuple[str, str], int] = {}
    for pk, schema, name in Dataset.objects.filter(source=source).order_by().values_list("pk", "schema", "name"):
        try:
            ref = pg.ObjectRef(schema, name)
        except ValueError:  # a name PostgreSQL cannot hold (e.g. longer than 63 bytes): nothing to observe
            continue
        dataset_ref[pk] = ref
        ids_by_ref[(schema, name)] = pk
    return dataset_ref, ids_by_ref


def _read_memberships(
    source: DataSource, now: Any, namer: _Namer, roles_with_grants: Collection[int]
) -> tuple[set[Membership], set[Membership]]:
    """Desired and in-flight memberships on `source`, in two queries (as `membership_jobs_create`
    picks sources: the role holds an active grant there, or a membership job ever ran there)."""
    ever: set[tuple[int, int]] = set()  # (role id, user id) with a membership job on this source
    in_flight: set[Membership] = set()
    job_rows = (
        ProvisioningJob.objects.filter(source=source, action=JobAction.MEMBERSHIP)
        .order_by()
        .values_list(
            "membership__role_id",
            "membership__user_id",
            "membership__role__slug",
            "membership__user__username",
            "status",
        )
        .distinct()
    )
    for role_id, user_id, slug, username, status in job_rows:
        ever.add((role_id, user_id))
        # Both principals are observed, so that a membership that ended is seen if it is still there.
        pair = (namer.of(user_id, None, username, None).name, namer.of(None, role_id, None, slug).name)
        if status in (JobStatus.QUEUED, JobStatus.RUNNING):
            in_flight.add(pair)
    rows = (
        RoleMembership.objects.active(now)
        .filter(Q(role_id__in=list(roles_with_grants)) | Q(role_id__in=sorted({r for r, _ in ever})))
        .order_by()
        .values_list("role_id", "user_id", "role__slug", "user__username")
    )
    members: set[Membership] = set()
    for role_id, user_id, slug, username in rows:
        if role_id not in roles_with_grants and (role_id, user_id) not in ever:
            continue
        members.add((namer.of(user_id, None, username, None).name, namer.of(None, role_id, None, slug).name))
    return members, in_flight


# --------------------------------------------------------------------------------------------
# Target side: observe() plus one ownership query
# --------------------------------------------------------------------------------------------

_OWNERS_SQL = """
SELECT n.nspname::text, c.relname::text, r.rolname::text
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS o(schema_name, rel_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = o.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = o.rel_name
JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
WHERE r.rolname = ANY(%(roles)s::name[])
"""


def _owners(conn: Any, objects: Collection[pg.ObjectRef], roles: Collection[str]) -> dict[pg.ObjectRef, str]:
    """Which of `objects` are owned by one of `roles` (an owner's ACL entry is not a grant)."""
    if not objects or not roles:
        return {}
    ordered = sorted(objects)
    params = {
        "schemas": [o.schema for o in ordered],
        "names": [o.name for o in ordered],
        "roles": sorted(roles),
    }
    try:
        with conn.cursor() as cur:
            cur.execute(_OWNERS_SQL, params)
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise pg.classify_error(exc, statement="owners()") from exc
    finally:
        if not conn.closed:
            conn.rollback()  # a pooled connection must not stay idle in transaction
    return {pg.ObjectRef(schema, name): owner for schema, name, owner in rows}


def _observe(source: DataSource, names: Collection[str]) -> tuple[pg.ObservedState, dict[pg.ObjectRef, str]]:
    try:
        target = provisioning.target_for(source)
    except ImproperlyConfigured as exc:  # the stored credential cannot be decrypted with the keys
        raise ReconcileFailed(f"Cannot read {source.name}: {exc}") from None
    try:
        conn = pg.POOL.get(target)
        observed = pg.observe(conn, names, packages=pgp.package_prefix(source.role_prefix))
        held = {obj for objects in observed.privileges.values() for obj in objects}
        owners = _owners(conn, held, names)
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise ReconcileFailed(f"Cannot read {source.name}: {exc.message}") from None
    return observed, owners


def _posture(source: DataSource) -> list[str]:
    """The target's CONNECT posture (pg.connect_posture); a failure to read it is one more warning,
    never a failed run: the drift was read."""
    target = provisioning.target_for(source)
    try:
        return pg.connect_posture(pg.POOL.get(target))
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        return [f"CONNECT privileges not read: {exc.message}"]


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------


def _describe(kind: str, privilege: str, column: str | None, obj: pg.ObjectRef, who: str, governed: bool) -> str:
    name = pg.display_name(who)
    on = f" ({pg.display_name(column)})" if column else ""
    if kind == DriftKind.EXPIRED_BUT_PRESENT:
        text = f"{privilege}{on} on {obj} still held by {name} after its grant ended"
    elif privilege == OWNER:
        text = f"unexpected ownership of {obj} by {name}"
    else:
        text = f"{kind} {privilege}{on} on {obj} for {name}"
    return text if governed else text + " (table not in the catalog)"


def _diff(state: _PortalState, observed: pg.ObservedState, owners: Mapping[pg.ObjectRef, str]) -> list[Drift]:
    """Findings, sorted for display. In-flight (principal, dataset) pairs are left out."""
    wanted: dict[str, dict[pg.ObjectRef, int]] = defaultdict(dict)
    for role_name, desired_ds in state.desired:
        if desired_ds in state.dataset_ref:
            wanted[role_name][state.dataset_ref[desired_ds]] = desired_ds
    out: list[Drift] = []
    for name in sorted(observed.packages - state.packages.keys()):
        detail = f"access package {pg.display_name(name)} is not defined by any grant in force"
        out.append(Drift(DriftKind.ORPHAN_PACKAGE, name, None, "", "", None, detail))
    for name, principal in state.principals.items():
        package = state.is_package(name)
        if package and name not in state.packages:
            continue  # an orphan package: reported once above
        # A person or portal role holds what its packages hold; a package only what it holds itself.
        held = observed.privileges.get(name, {}) if package else observed.effective(name)
        for obj in sorted(held.keys() | wanted.get(name, {}).keys()):
            ds_id = state.dataset_id.get((obj.schema, obj.name))
            governed = ds_id is not None
            if not principal.managed and not governed:
                continue  # a person's own login role: only what the portal governs is its business
            if governed and (name, ds_id) in state.in_flight:
                continue  # the provisioning engine is converging it right now
            if owners.get(obj) == name:
                if principal.managed:
                    detail = _describe(DriftKind.UNEXPECTED, OWNER, None, obj, name, governed)
                    out.append(Drift(DriftKind.UNEXPECTED, name, obj, "", OWNER, ds_id, detail))
                continue
            grants = state.desired.get((name, ds_id), []) if ds_id is not None else []
            want = _pairs(pg.Desired.union(name, obj, *grants).privileges) if grants else set()
            have = _pairs(held.get(obj, pg.Privileges()))
            table_held = {p for col, p in have if col is None}
            if not package and grants:
                for column, privilege in sorted(
                    want & _pairs(observed.privileges_of(name, obj)), key=lambda cp: (cp[0] or "", cp[1])
                ):
                    detail = (
                        f"{privilege}{f' ({pg.display_name(column)})' if column else ''} on {obj} held directly by"
                        f" {pg.display_name(name)}, not through its access package"
                    )
                    out.append(Drift(DriftKind.DIRECT, name, obj, column or "", privilege, ds_id, detail))
            ended = state.ended.get((name, ds_id), set()) if ds_id is not None else set()
            for column, privilege in want - have:
                if column is not None and privilege in table_held:
                    continue  # held more widely (table-level): the excess is reported below
                kind = DriftKind.MISSING
                detail = _describe(kind, privilege, column, obj, name, governed)
                out.append(Drift(kind, name, obj, column or "", privilege, ds_id, detail))
            for column, privilege in have - want:
                # Would an ended grant have given it? Then its revocation never reached the target.
                explained = (column, privilege) in ended or (None, privilege) in ended
                kind = DriftKind.EXPIRED_BUT_PRESENT if explained else DriftKind.UNEXPECTED
                detail = _describe(kind, privilege, column, obj, name, governed)
                out.append(Drift(kind, name, obj, column or "", privilege, ds_id, detail))
    rank = {p: i for i, p in enumerate(pg.PRIVILEGE_ORDER)}
    out.sort(
        key=lambda d: (
            d.principal,
            (d.object_schema, d.object_name),
            _KIND_ORDER[DriftKind(d.kind)],
            d.column,
            rank.get(d.privilege, -1),
        )
    )
    return out + _diff_memberships(state, observed)


def _diff_memberships(state: _PortalState, observed: pg.ObservedState) -> list[Drift]:
    """Direct memberships of the source's principals against the desired ones, sorted."""
    portal_groups = {p.name for p in state.principals.values() if p.role_id is not None}
    wanted: dict[str, set[str]] = defaultdict(set)
    for member, group in state.members:
        wanted[member].add(group)
    out: list[Drift] = []
    for name, principal in state.principals.items():
        if name in state.jit_roles or state.is_package(name):
            continue  # a JIT login role is a member of its grantee's principal by design
        # Memberships in access packages are compared as the privileges they give (_diff).
        held = observed.memberships.get(name, frozenset()) - observed.packages
        want = wanted.get(name, set())
        for kind, groups in ((DriftKind.MISSING, want - held), (DriftKind.UNEXPECTED, held - want)):
            for group in groups:
                if (name, group) in state.members_in_flight:
                    continue  # a membership job is converging it right now
                if kind == DriftKind.UNEXPECTED and not principal.managed and group not in portal_groups:
                    continue  # a person's own login role: only the portal's group roles are its business
                detail = f"{kind} membership of {pg.display_name(name)} in {pg.display_name(group)}"
                out.append(Drift(kind, name, None, "", MEMBER, None, detail, group=group))
    out.sort(key=lambda d: (d.principal, _KIND_ORDER[DriftKind(d.kind)], d.group))
    return out


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


def _record(
    source: DataSource, drift: list[Drift], skipped_pairs: set[PairKey], result: ReconcileResult, actor: Any, now: Any
) -> None:
    """Close what is gone, open what is new, audit the run: one transaction, source row locked."""
    with transaction.atomic():
        # Two runs of one source (beat + an operator) write one after the other, so neither opens a
        # finding the other just opened nor closes one the other just saw.
        DataSource.objects.select_for_update().filter(pk=source.pk).values_list("pk").first()
        open_rows = (
            DriftFinding.objects.open()
            .filter(source=source)
            .values_list("pk", "principal", "object_schema", "object_name", "column", "privilege", "kind")
        )
        observed = {item.key: item for item in drift}
        existing: set[FindingKey] = set()
        gone: list[int] = []
        for pk, *rest in open_rows:
            key: FindingKey = tuple(rest)  # type: ignore[assignment]
            existing.add(key)
            if key not in observed and key[:3] not in skipped_pairs:
                gone.append(pk)
        if gone:
            DriftFinding.objects.filter(pk__in=gone).update(resolved_at=now, resolution=DriftResolution.GONE)
        new = [
            DriftFinding(
                source=source,
                dataset_id=item.dataset_id,
                principal=item.principal,
                object_schema=item.object_schema,
                object_name=item.object_name,
                column=item.column,
                privilege=item.privilege,
                kind=item.kind,
                detail=item.detail,
                found_at=now,
                run_id=result.run_id,
            )
            for key, item in observed.items()
            if key not in existing
        ]
        for finding in DriftFinding.objects.bulk_create(new):
            audit.record(
                action="drift.found",
                actor=actor,
                target=finding,
                metadata={"source": source.name, "kind": finding.kind, "run": result.run_id},
            )
        result.opened, result.gone = len(new), len(gone)
        audit.record(
            action="reconcile.run",
            actor=actor,
            target=source,
            metadata={
                "run": result.run_id,
                "counts": result.counts,
                "opened": result.opened,
                "gone": result.gone,
                "skipped_in_flight": result.skipped,
                "principals": result.principals,
                "fix": result.fix,
                "posture": result.posture,
            },
        )


# --------------------------------------------------------------------------------------------
# Repair
# --------------------------------------------------------------------------------------------


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
    # The same key a provisioning job of that object takes (portal advisory lock and target lock).
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
    repaired on their own: they hold privileges no grant gives, and leave the package)."""
    first = items[0]
    held = sorted(observed.privileges.get(first.principal, {}))
    key = json.dumps([source.pk, "package", first.principal])
    plans = [
        pg.Plan.build([pg.revoke_held_statement(first.principal, obj)], [pg.lock_name("table", obj.schema, obj.name)])
        for obj in held
    ]
    if held:
        plans.append(pgp.plan_drop_packages(held[0], [first.principal]))
    if not plans:
        plans.append(pg.plan_drop_role(first.principal))
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


def _close_fixed(
    source: DataSource, pair: PairKey, items: list[Drift], applied: pg.ApplyResult, result: ReconcileResult, actor: Any
) -> None:
    """Close the open findings of a repaired (principal, object) as `fixed`, audited one by one."""
    name, schema, object_name = pair
    now = timezone.now()
    with transaction.atomic():
        findings = list(
            DriftFinding.objects.open()
            .select_for_update()
            .filter(source=source, principal=name, object_schema=schema, object_name=object_name)
        )
        for finding in findings:
            finding.resolved_at = now
            finding.resolved_by = actor if actor is not None and actor.pk else None
            finding.resolution = DriftResolution.FIXED
        DriftFinding.objects.bulk_update(findings, ["resolved_at", "resolved_by", "resolution"])
        for finding in findings:
            audit.record(
                action="drift.fixed",
                actor=actor,
                target=finding,
                changes={"resolution": ["", DriftResolution.FIXED]},
                metadata={
                    "source": source.name,
                    "run": result.run_id,
                    "sql": list(applied.statements),
                    "target_ms": round(applied.elapsed_ms, 2),
                },
            )
    fixed = {item.key for item in items}
    result.fixed_keys |= fixed
    result.fixed += len(fixed)


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
                pg.plan_ensure_role(p.name, database=source.database)
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


def _record_fix_failure(source: DataSource, item: Drift, error: str, result: ReconcileResult, actor: Any) -> None:
    line = f"{pg.display_name(item.principal)} on {item.where}: {error}"
    result.errors.append(line)
    log.warning("Drift repair failed on %s: %s", source.name, line)
    audit.record(
        action="drift.fix",
        actor=actor,
        target=source,
        outcome=Outcome.FAILED,
        reason=error,
        metadata={"run": result.run_id, "principal": item.principal, "object": item.where},
    )


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


def _ensure_may_reconcile(actor: Any, source: DataSource) -> None:
    # actor None is the system: the scheduled task or the management command.
    if actor is not None and not administers_sources(actor):
        raise NotPermitted("Only governance admins can reconcile data sources.")
    # The source's state, not the caller's input, is what stands in the way: a conflict (409).
    if not has_backend(source):
        raise ConflictError(
            f"{source.name} is neither a PostgreSQL nor an AWS source: nothing to reconcile.", state=source.kind
        )
    if not source.provisioning_enabled:
        raise ConflictError(
            f"Provisioning is disabled for {source.name}: the portal manages nothing there.",
            state="provisioning_disabled",
        )


def reconcile_source(*, source: DataSource, fix: bool = False, actor: Any = None) -> ReconcileResult:
    """Diff the target's actual privileges with the grants in force; record findings; repair if `fix`.

    Call it outside `transaction.atomic()` (it reads a remote database and takes session advisory
    locks). Raises NotPermitted / ConflictError (recorded as denied) for a non-admin actor, a source
    that is not PostgreSQL or has provisioning off; ReconcileFailed (recorded as a failed
    `reconcile.run`) when the target cannot be observed. A repair that fails is not an exception: it
    is in `result.errors`, audited as a failed `drift.fix`, and its findings stay open.
    """
    with refusal_recorded(action="reconcile.run", actor=actor, target=source):
        _ensure_may_reconcile(actor, source)
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "reconcile_source() reads a remote database; call it outside transaction.atomic() "
            "so that no portal lock is held while waiting on the network."
        )
    if backend_for(source).converges == Converges.PRINCIPAL_POLICY:
        from .reconcile_aws import reconcile_aws_source

        return reconcile_aws_source(source=source, fix=fix, actor=actor)
    from . import reconcile_jit  # JIT login roles (leftover, hand-edited expiry); it builds on this module

    started = time.perf_counter()
    result = ReconcileResult(source=source.name, run_id=uuid.uuid4(), fix=fix)
    now = timezone.now()
    state = _read_portal(source, now)
    result.principals = len(state.principals)
    try:
        observed, owners = _observe(source, list(state.principals))
        logins = reconcile_jit.observe(source)
    except ReconcileFailed as exc:
        audit.record(
            action="reconcile.run",
            actor=actor,
            target=source,
            outcome=Outcome.FAILED,
            reason=exc.message,
            metadata={"run": result.run_id, "code": exc.code, "fix": fix},
        )
        raise
    login_drift, logins_in_flight = reconcile_jit.diff(source, logins, now)
    result.drift = _diff(state, observed, owners) + login_drift
    result.posture = _posture(source)
    result.skipped = sum(1 for name, _ in state.in_flight if not state.is_package(name))
    skipped_pairs = {
        (name, ref.schema, ref.name) for name, ds_id in state.in_flight if (ref := state.dataset_ref.get(ds_id))
    }
    skipped_pairs |= {(member, "", group) for member, group in state.members_in_flight}
    result.skipped += len(state.members_in_flight)
    skipped_pairs |= {(name, "", "") for name in logins_in_flight}
    _record(source, result.drift, skipped_pairs, result, actor, now)

    if fix and result.drift:
        by_pair: dict[PairKey, list[Drift]] = defaultdict(list)
        for item in result.drift:
            by_pair[item.pair].append(item)
        for pair in sorted(by_pair):
            items = by_pair[pair]
            if items[0].kind in reconcile_jit.KINDS:
                reconcile_jit.fix(source, items, result, actor)
            elif items[0].kind == DriftKind.ORPHAN_PACKAGE:
                _fix_orphan_package(source, items, result, actor, observed)
            elif items[0].obj is None:
                _fix_membership(source, state, items, result, actor)
            else:
                _fix_pair(source, state.principals[pair[0]], items, result, actor, observed)
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def reconcile_request(*, source: DataSource, fix: bool, actor: Any) -> None:
    """Queue a reconcile run of `source` for a worker (the API's trigger: a run reads a remote
    catalog and may repair, which does not belong in a web request). Refused (and recorded) at once
    when the actor may not reconcile or the source cannot be reconciled; the run's outcome is then
    audited as `reconcile.run` and its findings are listed by the drift-findings endpoint."""
    with refusal_recorded(action="reconcile.request", actor=actor, target=source), transaction.atomic():
        _ensure_may_reconcile(actor, source)
        audit.record(action="reconcile.requested", actor=actor, target=source, metadata={"fix": fix})
        transaction.on_commit(lambda: publishing.reconcile_source(source.pk, fix, getattr(actor, "pk", None)))


def reconcile_sources_all(*, actor: Any = None, fix: bool | None = None) -> dict[str, ReconcileResult | str]:
    """Every provisioning-enabled PostgreSQL and AWS source; one source's failure does not stop the others.

    `fix=None` means each source's own `auto_fix_drift` (the scheduled run). The value per source is
    its result, or the one-line error that stopped it (already audited as a failed run).
    """
    out: dict[str, ReconcileResult | str] = {}
    sources = provisioned_sources()
    for source in sources:
        try:
            out[source.name] = reconcile_source(
                source=source, fix=source.auto_fix_drift if fix is None else fix, actor=actor
            )
        except DomainError as exc:  # already recorded (denied or failed) by reconcile_source
            out[source.name] = exc.message
        except Exception as exc:  # a bug or a lost portal connection on one source
            log.exception("Reconcile of %s failed", source.name)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            try:
                audit.record(action="reconcile.run", actor=actor, target=source, outcome=Outcome.FAILED, reason=message)
            except Exception:  # the portal database itself may be what failed
                log.exception("Could not record the failed reconcile of %s", source.name)
            out[source.name] = message
    return out
