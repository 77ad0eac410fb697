"""Reconciliation, portal side: the desired state of a source in a fixed number of queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
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
    treated,
)
from ...provisioners import pg_packages as pgp
from ...provisioners import pg_row_filters as pgr
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
    """Everything of the portal side except the access packages each principal should be a member
    of: those are streamed per principal by `_wanted`, so a run holds one chunk of them at a time."""

    principals: dict[str, _Principal]
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
    # Access packages the grants in force (status active or approved) define: name -> dataset id,
    # and name -> the privileges the package holds on that dataset's object (its definition).
    packages: dict[str, int] = field(default_factory=dict)
    package_privileges: dict[str, pg.Privileges] = field(default_factory=dict)
    # (level, columns as stored, row filter compiled or "") -> dataset id -> package name.
    package_of: dict[tuple[str, tuple[str, ...], str], dict[int, str]] = field(default_factory=dict)
    namer: _Namer | None = None
    # The portal's group roles, and the groups each member should be in (from `members`).
    portal_groups: set[str] = field(default_factory=set)
    wanted_groups: dict[str, set[str]] = field(default_factory=dict)

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


_GRANTEE = ("grantee_user_id", "grantee_role_id", "grantee_user__username", "grantee_role__slug")


def _in_force(source: DataSource, now: Any, *statuses: str) -> Any:
    # Grants with treated columns are held on governed views: reconciled by reconcile/views.py.
    # Aggregate grants hold nothing on the target (privacy/): Grant.objects.provisioned().
    return (
        Grant.objects.provisioned()
        .active(now)
        .filter(dataset__source=source, status__in=list(statuses))
        .exclude(treated())
        .order_by()
    )


def _principal_rows(source: DataSource) -> list[_Principal]:
    """The source's SourcePrincipal rows (one query): the roles the portal knows by name there."""
    rows = SourcePrincipal.objects.filter(source=source).values_list("db_role", "managed", "user_id", "role_id")
    return [_Principal(*row) for row in rows]


def _read_portal(source: DataSource, now: Any, rows: Iterable[_Principal]) -> _PortalState:
    """Eight queries (after `_principal_rows`), independent of the number of grants, memberships,
    principals and datasets.

    The grants in force are read here only as their distinct (dataset, level, columns), i.e. the
    access packages they define, and their exceptions (approved, JIT logins): which packages each
    principal should be in is streamed per principal afterwards (`_wanted`)."""
    namer = _Namer(source, rows)
    privs_of = _Privs()
    dataset_ref, ids_by_ref = _datasets(source)

    packages: dict[str, int] = {}
    package_privileges: dict[str, pg.Privileges] = {}
    package_of: dict[tuple[str, tuple[str, ...], str], dict[int, str]] = defaultdict(dict)
    named: dict[tuple[int, pg.Privileges], str] = {}
    namers: dict[pg.Privileges, Callable[[pg.ObjectRef], str]] = {}
    signatures = (
        _in_force(source, now, GrantStatus.ACTIVE, GrantStatus.APPROVED)
        .values_list("dataset_id", "level", "columns", "row_filter_snapshot")
        .distinct()
    )
    for dataset_id, level, columns, row_filter in signatures:
        ref = dataset_ref.get(dataset_id)
        if ref is None:
            continue  # a name PostgreSQL cannot hold: nothing to observe
        privs = privs_of(level, columns)
        compiled = _compiled(row_filter)
        name = named.get((dataset_id, privs)) if not compiled else None
        if compiled:  # a filtered package (docs/privacy.md "Row filters"): named with its filter
            name = pgp.package_name(source.role_prefix, source.database, ref, privs, compiled)
        elif name is None:
            namer_of = namers.get(privs)
            if namer_of is None:
                namer_of = namers[privs] = pgp.package_namer(source.role_prefix, source.database, privs)
            name = named[(dataset_id, privs)] = namer_of(ref)
        packages[name] = dataset_id
        package_privileges[name] = privs
        package_of[(level, tuple(columns or ()), compiled)][dataset_id] = name

    # The few grants in force that are not simply "active": approved ones (the engine owns them
    # right now) and those with a live JIT login.
    in_flight: set[tuple[str, int]] = set()
    jit_roles: set[str] = set()
    exceptions = (
        _in_force(source, now, GrantStatus.ACTIVE, GrantStatus.APPROVED)
        .filter(Q(status=GrantStatus.APPROVED) | (~Q(jit_role="") & Q(jit_dropped_at__isnull=True)))
        .values_list(
            *_GRANTEE, "dataset_id", "level", "columns", "status", "jit_role", "jit_dropped_at", "row_filter_snapshot"
        )
    )
    for user_id, role_id, username, slug, dataset_id, level, columns, status, jit_role, jit_dropped, rf in exceptions:
        principal = namer.of(user_id, role_id, username, slug)
        if jit_role and jit_dropped is None:
            jit_roles.add(jit_role)
        if status == GrantStatus.APPROVED:
            in_flight.add((principal.name, dataset_id))
            package_name = package_of.get((level, tuple(columns or ()), _compiled(rf)), {}).get(dataset_id)
            if package_name is not None:
                in_flight.add((package_name, dataset_id))  # its job creates or changes the package
    # Portal roles holding grants, named before the stream: their members are compared against them.
    roles_with_grants: set[int] = set()
    role_rows = (
        _in_force(source, now, GrantStatus.ACTIVE)
        .filter(grantee_role_id__isnull=False)
        .values_list("grantee_role_id", "grantee_role__slug")
        .distinct()
    )
    for role_id, slug in role_rows:
        namer.of(None, role_id, None, slug)
        roles_with_grants.add(role_id)

    ended: dict[tuple[str, int], set[Pair]] = defaultdict(set)
    ended_rows = (
        Grant.objects.provisioned()
        .filter(dataset__source=source)
        .filter(
            Q(revoked_at__isnull=False) | Q(ends_at__lte=now) | Q(status__in=[GrantStatus.EXPIRED, GrantStatus.REVOKED])
        )
        .order_by()
        .values_list(*_GRANTEE, "dataset_id", "level", "columns")
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
    principals = namer.all  # grows while `_wanted` streams (grantees with no SourcePrincipal row)
    for name in packages:
        principals.setdefault(name, _Principal(name, True, None, None))
    wanted_groups: dict[str, set[str]] = defaultdict(set)
    for member, group in members:
        wanted_groups[member].add(group)
    return _PortalState(
        principals,
        dict(ended),
        in_flight,
        dataset_ref,
        ids_by_ref,
        members,
        members_in_flight,
        jit_roles,
        packages,
        package_privileges,
        dict(package_of),
        namer,
        {p.name for p in principals.values() if p.role_id is not None},
        dict(wanted_groups),
    )


def _wanted(
    state: _PortalState, source: DataSource, now: Any, chunk: int, budget: int
) -> Iterator[list[tuple[str, frozenset[str]]]]:
    """Chunks of at most `chunk` principals with the access packages each should be a member of,
    closed early once they call for `budget` memberships (ten people in 10,000 packages each are
    100,000 of them); a principal is never split between two chunks.

    One query for every chunk: the active grants in force grouped per (grantee, level, columns)
    with the array of their datasets, ordered by grantee and read through a server-side cursor, so
    memory holds one chunk, not the source. Principals with nothing in force (people whose grants
    ended, portal roles, mapped logins) follow with empty sets: they too must hold nothing else."""
    assert state.namer is not None
    namer, package_of = state.namer, state.package_of
    rows = (
        _in_force(source, now, GrantStatus.ACTIVE)
        .values(*_GRANTEE, "level", "columns", "row_filter_snapshot")
        .annotate(datasets=ArrayAgg("dataset_id"))
        .order_by("grantee_user_id", "grantee_role_id")
        .values_list(*_GRANTEE, "level", "columns", "datasets", "row_filter_snapshot")
    )
    seen: set[str] = set()
    batch: dict[str, set[str]] = {}
    size = 0  # memberships the batch calls for (counted as rows arrive: an upper bound)
    for user_id, role_id, username, slug, level, columns, datasets, rf in rows.iterator(chunk_size=max(chunk, 100)):
        name = namer.of(user_id, role_id, username, slug).name
        wanted = batch.get(name)
        if wanted is None:
            if len(batch) >= chunk or size >= budget:
                yield [(n, frozenset(w)) for n, w in batch.items()]
                batch, size = {}, 0
            wanted = batch[name] = set()
            seen.add(name)
        size += len(datasets)
        names = package_of.get((level, tuple(columns or ()), _compiled(rf)), {})
        wanted.update(package for dataset_id in datasets if (package := names.get(dataset_id)) is not None)
    if batch:
        yield [(n, frozenset(w)) for n, w in batch.items()]
    rest = [name for name in state.principals if name not in seen and not state.is_package(name)]
    for first in range(0, len(rest), chunk):
        yield [(name, frozenset()) for name in rest[first : first + chunk]]


def _compiled(row_filter: dict[str, Any] | None) -> str:
    """The compiled predicate of a grant's row filter snapshot ("" when unfiltered)."""
    return pgr.text_of(pgr.from_json(row_filter["tree"])) if row_filter else ""


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
