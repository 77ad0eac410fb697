"""Reconciliation: the diff of desired and observed state (pure: no database, no network)."""

from __future__ import annotations

from collections import defaultdict

from ...models import (
    DriftKind,
)
from ...provisioners import postgres as pg

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.
from .model import (
    _KIND_ORDER,
    MEMBER,
    OWNER,
    Drift,
    _pairs,
)
from .portal import _PortalState


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


def _object_drift(
    state: _PortalState,
    name: str,
    obj: pg.ObjectRef,
    held: pg.Privileges | None,
    want_privs: list[pg.Privileges],
    direct: pg.Privileges | None,
    owner: str | None,
) -> list[Drift]:
    """The findings of one (principal, object): `held` is what the principal holds there (directly
    and through its packages), `want_privs` the definitions of the packages it should hold it
    through (for a package: its own definition), `direct` what a person or role holds directly
    (None for a package)."""
    principal = state.principals[name]
    ds_id = state.dataset_id.get((obj.schema, obj.name))
    governed = ds_id is not None
    if not principal.managed and not governed:
        return []  # a person's own login role: only what the portal governs is its business
    if governed and (name, ds_id) in state.in_flight:
        return []  # the provisioning engine is converging it right now
    out: list[Drift] = []
    if owner == name:
        if principal.managed:
            detail = _describe(DriftKind.UNEXPECTED, OWNER, None, obj, name, governed)
            out.append(Drift(DriftKind.UNEXPECTED, name, obj, "", OWNER, ds_id, detail))
        return out
    grants = want_privs if ds_id is not None else []
    want = _pairs(pg.Desired.union(name, obj, *grants).privileges) if grants else set()
    have = _pairs(held) if held is not None else set()
    table_held = {p for col, p in have if col is None}
    if direct is not None and grants:
        for column, privilege in sorted(want & _pairs(direct), key=lambda cp: (cp[0] or "", cp[1])):
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
    return out


def _diff_packages(state: _PortalState, observed: pg.ObservedState) -> tuple[list[Drift], frozenset[str]]:
    """Each access package's own ACL against its definition (one comparison per package), and
    orphan packages. Returns the findings and the packages whose ACL is not exactly their
    definition (their members are then compared object by object on those objects)."""
    out: list[Drift] = []
    for name in sorted(observed.packages - state.packages.keys()):
        detail = f"access package {pg.display_name(name)} is not defined by any grant in force"
        out.append(Drift(DriftKind.ORPHAN_PACKAGE, name, None, "", "", None, detail))
    dirty = set(observed.packages - state.packages.keys())
    for name, ds_id in state.packages.items():
        obj = state.dataset_ref[ds_id]
        definition = state.package_privileges[name]
        held = observed.privileges.get(name, {})
        if len(held) == 1 and held.get(obj) == definition and observed.owners.get(obj) != name:
            continue  # exactly its definition: the common case, one comparison
        dirty.add(name)
        for ref in sorted(held.keys() | {obj}):
            out += _object_drift(
                state, name, ref, held.get(ref), [definition] if ref == obj else [], None, observed.owners.get(ref)
            )
    return out, frozenset(dirty)


def _diff_principals(
    state: _PortalState,
    chunk: list[tuple[str, frozenset[str]]],
    observed: pg.ObservedState,
    acls: pg.ObservedState,
    packages: pg.ObservedState,
    dirty: frozenset[str],
) -> tuple[list[Drift], list[Drift]]:
    """A chunk of people and portal roles: the SET of access packages each is a member of against
    the set its grants in force call for (one set comparison per principal). Only where these
    differ, where it holds something directly or owns an object, or where one of its packages
    differs from its definition, are its objects compared privilege by privilege. `observed` holds
    the chunk's memberships, `acls` their direct privileges and owned objects, `packages` the access
    packages' ACLs (the last two are one observation of the whole source). Returns the
    privilege findings and the membership findings (unsorted)."""
    out: list[Drift] = []
    owned_by: dict[str, list[pg.ObjectRef]] = defaultdict(list)
    for obj, owner in acls.owners.items():
        owned_by[owner].append(obj)
    for name, wanted in chunk:
        held = observed.memberships.get(name, frozenset()) & packages.packages
        direct = acls.privileges.get(name, {})
        owned = owned_by.get(name, [])
        if held == wanted and not direct and not owned and held.isdisjoint(dirty):
            continue  # exactly the packages it should be in, nothing else: no drift
        # Per object: what the packages it is in hold there, and what those it should be in define.
        have: dict[pg.ObjectRef, pg.Privileges] = dict(direct)
        for package in held:
            for obj, privs in packages.privileges.get(package, {}).items():
                have[obj] = have[obj] | privs if obj in have else privs
        want: dict[pg.ObjectRef, list[pg.Privileges]] = defaultdict(list)
        for package in wanted:
            want[state.dataset_ref[state.packages[package]]].append(state.package_privileges[package])
        suspects: set[pg.ObjectRef] = set(direct)
        for package in held ^ wanted:
            if package in wanted:
                suspects.add(state.dataset_ref[state.packages[package]])
            suspects |= packages.privileges.get(package, {}).keys()
        for package in held & dirty:
            suspects |= packages.privileges.get(package, {}).keys()
            if package in state.packages:
                suspects.add(state.dataset_ref[state.packages[package]])
        suspects |= {obj for obj in owned if obj in have or obj in want}
        for obj in sorted(suspects):
            out += _object_drift(
                state,
                name,
                obj,
                have.get(obj),
                want.get(obj, []),
                direct.get(obj, pg.Privileges()),
                acls.owners.get(obj),
            )
    return out, _diff_memberships(state, [name for name, _ in chunk], observed, packages.packages)


def _sorted(privileges: list[Drift], memberships: list[Drift]) -> list[Drift]:
    """Findings in display order: privilege findings, then membership findings."""
    rank = {p: i for i, p in enumerate(pg.PRIVILEGE_ORDER)}
    privileges.sort(
        key=lambda d: (
            d.principal,
            (d.object_schema, d.object_name),
            _KIND_ORDER[DriftKind(d.kind)],
            d.column,
            rank.get(d.privilege, -1),
        )
    )
    memberships.sort(key=lambda d: (d.principal, _KIND_ORDER[DriftKind(d.kind)], d.group))
    return privileges + memberships


def _diff_memberships(
    state: _PortalState, names: list[str], observed: pg.ObservedState, packages: frozenset[str]
) -> list[Drift]:
    """Direct memberships of `names` other than in access packages against the desired ones."""
    portal_groups, wanted = state.portal_groups, state.wanted_groups
    out: list[Drift] = []
    for name in names:
        principal = state.principals[name]
        if name in state.jit_roles or state.is_package(name):
            continue  # a JIT login role is a member of its grantee's principal by design
        # Memberships in access packages are compared as sets (_diff_principals).
        held = observed.memberships.get(name, frozenset()) - packages
        want = wanted.get(name, set())
        for kind, groups in ((DriftKind.MISSING, want - held), (DriftKind.UNEXPECTED, held - want)):
            for group in groups:
                if (name, group) in state.members_in_flight:
                    continue  # a membership job is converging it right now
                if kind == DriftKind.UNEXPECTED and not principal.managed and group not in portal_groups:
                    continue  # a person's own login role: only the portal's group roles are its business
                detail = f"{kind} membership of {pg.display_name(name)} in {pg.display_name(group)}"
                out.append(Drift(kind, name, None, "", MEMBER, None, detail, group=group))
    return out


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------
