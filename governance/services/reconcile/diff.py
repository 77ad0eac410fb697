"""Reconciliation: the diff of desired and observed state (pure: no database, no network)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

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
