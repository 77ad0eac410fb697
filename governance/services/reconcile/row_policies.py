"""Reconciliation of row-level security policies (docs/privacy.md "Row filters").

The packages of the grants in force on datasets under row filters are compared with the target's
policies (`pg_row_filters.verify`: present, PERMISSIVE FOR SELECT TO the package, the same USING
expression once normalised, RLS enabled and forced as asked). A difference is reported on the run
(`result.row_policies`) and audited; with `fix` the policy is dropped and created again with its
definition (and RLS enabled) in one target transaction under the object's lock, then verified."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit import services as audit
from audit.models import Outcome

from ... import provisioning
from ...models import Dataset, DataSource, Grant, GrantStatus
from ...provisioners import pg_row_filters as pgr
from ...provisioners import postgres as pg
from ...provisioners.pg_packages import package_prefix
from ..engine.target import apply_and_verify
from .model import ReconcileResult


def _expected(source: DataSource, now: Any) -> dict[int, tuple[Dataset, dict[str, pgr.Expected]]]:
    grants = (
        Grant.objects.provisioned()
        .active(now)
        .filter(dataset__source=source, status=GrantStatus.ACTIVE, dataset__row_security__isnull=False)
        .select_related("dataset", "dataset__source")
        .order_by()
    )
    out: dict[int, tuple[Dataset, dict[str, pgr.Expected]]] = {}
    for grant in grants:
        pkg = provisioning.package_of(
            grant.dataset, grant.level, grant.columns, row_filter=provisioning.row_filter_of(grant)
        )
        force = bool(pkg.rls and pkg.rls.force) and pkg.row_filter is not None
        entry = out.setdefault(grant.dataset_id, (grant.dataset, {}))
        entry[1][pkg.name] = pgr.Expected(pkg.name, pkg.obj, pkg.row_filter, force)
    return out


def _verifier(expected: list[pgr.Expected]) -> Callable[[Any], list[str]]:
    return lambda conn: [line for lines in pgr.verify(conn, expected) for line in lines]


def reconcile_row_policies(source: DataSource, result: ReconcileResult, now: Any, *, fix: bool, actor: Any) -> None:
    expected = _expected(source, now)
    if not expected:
        return
    target = provisioning.target_for(source)
    conn = pg.POOL.get(target)
    for dataset, policies in expected.values():
        wanted = list(policies.values())
        found = pgr.verify(conn, wanted)
        broken = [(e, problems) for e, problems in zip(wanted, found, strict=True) if problems]
        for e, problems in broken:
            result.row_policies += problems
            audit.record(
                action="drift.row_policy",
                actor=actor,
                target=dataset,
                outcome=Outcome.FAILED,
                reason="; ".join(problems),
                metadata={"run": result.run_id, "package": e.name},
            )
        if not (fix and broken):
            continue
        security = dataset.row_security or {}
        rls = pg.RowSecurity(bool(security.get("force")), tuple(security.get("confirmed", ())))
        statements = [pg.Statement.of(pgr.replace_policy_query(e.name, e.obj, e.row_filter)) for e, _ in broken]
        if any(e.row_filter is not None for e, _ in broken):
            rls = pg.RowSecurity(rls.force, rls.confirmed, package_prefix(source.role_prefix))
            statements.append(pgr.enable_statement(provisioning.object_ref(dataset), rls))
            if rls.force:
                statements.append(pgr.force_statement(provisioning.object_ref(dataset)))
        plan = pg.Plan.build(statements, [pg.lock_name("table", dataset.schema, dataset.name)])
        try:
            apply_and_verify(target, plan, provisioning.lock_key(dataset), _verifier([e for e, _ in broken]))
        except pg.ProvisioningError as exc:
            result.errors.append(f"row policies on {dataset.qualified_name}: {exc}")
            continue
        result.row_policies_fixed += sum(len(problems) for _, problems in broken)
        audit.record(
            action="drift.row_policy_fixed",
            actor=actor,
            target=dataset,
            metadata={"run": result.run_id, "packages": [e.name for e, _ in broken], "sql": plan.lines},
        )
