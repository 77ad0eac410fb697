"""Reconciliation: the types of a run (findings, results) and the constants they use."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...errors import DomainError
from ...models import (
    DriftKind,
)
from ...provisioners import postgres as pg

# The portal-side advisory lock a provisioning job holds on a target object while it converges it;
# taking the same one means a repair and a job on one object never overlap.

log = logging.getLogger(__name__)

OWNER = "OWNER"  # the pseudo-privilege of an ownership finding
MEMBER = "MEMBER"  # the pseudo-privilege of a membership finding (the group is its object_name)
_KIND_ORDER = {
    DriftKind.MISSING: 0,
    DriftKind.UNEXPECTED: 1,
    DriftKind.EXPIRED_BUT_PRESENT: 2,
    DriftKind.DIRECT: 3,
    DriftKind.ORPHAN_PACKAGE: 4,
    DriftKind.VIEW_DIFFERS: 5,
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
    # The portal's own login on the target ({"name", "superuser", "bypassrls"}; None: not read).
    login: dict[str, Any] | None = None
    # Row-level security policies of packages that differ from their definition (one line each) and
    # those repaired by this run (governance.services.reconcile.row_policies).
    row_policies: list[str] = field(default_factory=list)
    row_policies_fixed: int = 0

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
        return self.remaining == 0 and len(self.row_policies) == self.row_policies_fixed

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


def _pairs(privs: pg.Privileges) -> set[Pair]:
    out: set[Pair] = {(None, p) for p in privs.table}
    for column, column_privs in privs.columns.items():
        out |= {(column, p) for p in column_privs}
    return out
