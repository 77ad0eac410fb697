"""Reconciliation, portal side: the desired state of a source in a fixed number of queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from ... import provisioning
from ...models import (
    Dataset,
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
    SourcePrincipal,
)
from ...provisioners import pg_packages as pgp
from ...provisioners import postgres as pg

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from .model import (
    Membership,
    Pair,
    _pairs,
    _Principal,
)


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
