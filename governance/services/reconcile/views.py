"""Reconciling governed views (column treatments; docs/provisioning.md#governed-views).

Grants with a treated column are held through packages on governed views, not on the dataset's
table, so the package-by-package diff of `reconcile_source` leaves them to this pass: it names the
roles it owns (the view packages in use and the views' owner role) so that the main diff does not
call them orphans or unexpected, then verifies, per (grantee, dataset), what a provisioning job would
verify: the packages' ACL on each view, the grantee's memberships, and each view against the
definition recorded when the portal created it (a hand edit such as ``CREATE OR REPLACE VIEW`` with
the raw column differs). A repair converges the pair as a job does, under the same lock: the view is
created again in that transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from ... import provisioning
from ...models import Dataset, DataSource, DriftKind, Grant, GrantStatus, treated
from ...provisioners import pg_packages as pgp
from ...provisioners import pg_views as pgv
from ...provisioners import postgres as pg
from ..engine.target import apply_and_verify
from ..locks import object_lock
from .model import Drift, ReconcileResult
from .record import _close_fixed, _record_fix_failure


@dataclass
class GovernedState:
    """The treated grants in force of a source, per (grantee's role, dataset id): what they hold."""

    desired: dict[tuple[str, int], pg.Desired] = field(default_factory=dict)
    managed: dict[str, bool] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)  # view packages in use and the owner role
    views: set[pg.ObjectRef] = field(default_factory=set)  # the governed views in use

    def ignored(self, item: Drift) -> bool:
        """A difference the main diff finds on what this pass owns (its roles, its views)."""
        return item.principal in self.owned or item.group in self.owned or item.obj in self.views


def _treated_grants(source: DataSource, **where: Any) -> list[Grant]:
    return list(
        Grant.objects.active(timezone.now())
        .filter(treated(), dataset__source=source, status=GrantStatus.ACTIVE, **where)
        .select_related("dataset__source", "grantee_user", "grantee_role")
    )


def governed_state(source: DataSource) -> GovernedState:
    """What the source's treated grants in force hold (one query for the grants, one for their
    principals, the dataset columns per governed view)."""
    state = GovernedState(owned={pgv.owner_role(source.role_prefix)})
    grants = _treated_grants(source)
    if not grants:
        return state
    principals = provisioning.grant_principals(source, grants)
    by_pair: dict[tuple[str, int], list[Grant]] = defaultdict(list)
    for grant in grants:
        ref = principals[grant.pk]
        by_pair[(ref.db_role, grant.dataset_id)].append(grant)
        state.managed[ref.db_role] = ref.managed
    for (role, dataset_id), held in by_pair.items():
        desired = provisioning.desired_for(dataset=held[0].dataset, grants=held, principal=role)
        state.desired[(role, dataset_id)] = desired
        state.owned |= {p.name for p in desired.packages}
        state.views |= {p.obj for p in desired.packages}
    return state


def _views(desired: pg.Desired) -> list[pgv.GovernedView]:
    return [p.view for p in desired.packages if isinstance(p.view, pgv.GovernedView)]


def governed_drift(source: DataSource, state: GovernedState) -> list[Drift]:
    """Each difference of a treated (grantee, dataset) as a `view_differs` drift on its view."""
    if not state.desired:
        return []
    pairs = sorted(state.desired)
    desireds = [state.desired[p] for p in pairs]
    with pg.POOL.connection(provisioning.target_for(source)) as conn:
        held = pgp.verify_many(conn, desireds)
        views = pgv.verify_views(conn, [v for d in desireds for v in _views(d)])
    out: list[Drift] = []
    found = iter(views)
    for (role, dataset_id), desired, problems in zip(pairs, desireds, held, strict=True):
        for view in _views(desired):
            for detail in [*next(found), *problems]:
                out.append(Drift(DriftKind.VIEW_DIFFERS, role, view.view, "", "VIEW", dataset_id, detail))
            problems = []  # said once, on the pair's first view
    return out


def governed_fix(source: DataSource, items: list[Drift], result: ReconcileResult, actor: Any) -> None:
    """Converge the (grantee, dataset) of `items` as a provisioning job does, under its lock, from
    the grants read again under it; then verify the views and close the findings."""
    first = items[0]
    assert first.obj is not None and first.dataset_id is not None
    grants = _treated_grants(source, dataset_id=first.dataset_id)
    key = provisioning.lock_key(grants[0].dataset) if grants else ""
    if not grants:
        result.skipped += 1  # ended meanwhile: its revocation drops the view's package
        return
    with object_lock(key):
        state = governed_state(source)
        desired = state.desired.get((first.principal, first.dataset_id))
        if desired is None:
            result.skipped += 1
            return
        plan = pgp.plan_converge(
            desired, managed_principal=state.managed.get(first.principal, True), database=source.database
        )
        try:
            applied = apply_and_verify(
                provisioning.target_for(source),
                plan,
                key,
                lambda conn: (
                    pgp.verify(conn, desired) + [p for ps in pgv.verify_views(conn, _views(desired)) for p in ps]
                ),
            )
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, first, exc.message, result, actor)
            return
    _close_fixed(source, (first.principal, first.obj.schema, first.obj.name), items, applied, result, actor)


def has_treated_grants(source: DataSource) -> bool:
    """Whether any grant in force on the source is held through a governed view (one query)."""
    return Grant.objects.active(timezone.now()).filter(treated(), dataset__source=source).exists()


def governed_views_follow(*, source: DataSource, actor: Any = None) -> list[str]:
    """Make every treated grant's governed view follow its table after a catalog change: a column
    added to or removed from a table that a whole-table grant reads changes the view the grant
    should hold (a new name, since the name digests the columns). Per (grantee, dataset) whose views
    or memberships differ, or whose table still has a governed view no grant uses, converge as a
    job does under its lock: the new view and package, then leave the old view's package, dropped
    with the old view once nobody holds it. Each convergence audited as `governed_view.followed`
    (failed ones too, with the target's message); returns one line per pair converged or failed.

    The scheduled reconcile finds the same differences as `view_differs` drift; this is what makes
    the grantee's view follow the table within one sync instead of one reconcile interval."""
    state = governed_state(source)
    if not state.desired:
        return []
    pairs = sorted(state.desired)
    desireds = [state.desired[p] for p in pairs]
    bases = sorted({d.obj for d in desireds}, key=lambda o: (o.schema, o.name))
    owner = pgv.owner_role(source.role_prefix)
    schema = next(v.view.schema for d in desireds for v in _views(d))
    with pg.POOL.connection(provisioning.target_for(source)) as conn:
        held = pgp.verify_many(conn, desireds)
        checked = iter(pgv.verify_views(conn, [v for d in desireds for v in _views(d)]))
        on_base = dict(zip(bases, pgv.views_on(conn, bases, schema=schema, owner=owner), strict=True))
    out: list[str] = []
    for (role, dataset_id), desired, problems in zip(pairs, desireds, held, strict=True):
        problems = problems + [p for _ in _views(desired) for p in next(checked)]
        stale = {pkg: view for view, pkgs in on_base[desired.obj].items() if view not in state.views for pkg in pkgs}
        if problems or stale:
            out.append(_follow_pair(source, role, dataset_id, state, stale, actor))
    return out


def _follow_pair(
    source: DataSource, role: str, dataset_id: int, state: GovernedState, stale: dict[str, pg.ObjectRef], actor: Any
) -> str:
    dataset = Dataset.objects.select_related("source").get(pk=dataset_id)
    desired = state.desired[(role, dataset_id)]
    leaving = pg.Desired.through(role, desired.obj, desired.packages, sorted(stale), stale)
    plan = pgp.plan_converge(leaving, managed_principal=state.managed.get(role, True), database=source.database)
    views = sorted(str(v.view) for v in _views(desired))
    dropped = sorted({str(v) for v in stale.values()})
    metadata = {"source": source.name, "principal": role, "views": views, "left": dropped}
    try:
        with object_lock(provisioning.lock_key(dataset)):
            applied = apply_and_verify(
                provisioning.target_for(source),
                plan,
                provisioning.lock_key(dataset),
                lambda conn: (
                    pgp.verify(conn, leaving) + [p for ps in pgv.verify_views(conn, _views(desired)) for p in ps]
                ),
            )
    except pg.ProvisioningError as exc:
        with transaction.atomic():
            audit.record(
                action="governed_view.followed",
                actor=actor,
                target=dataset,
                outcome=Outcome.FAILED,
                reason=exc.message,
                metadata=metadata,
            )
        return f"{role} on {dataset.qualified_name}: {exc.message}"
    with transaction.atomic():
        audit.record(
            action="governed_view.followed",
            actor=actor,
            target=dataset,
            reason=f"the governed view of {dataset.qualified_name} follows its table",
            metadata={**metadata, "sql": list(applied.statements)},
        )
    return f"{role} on {dataset.qualified_name}: now {', '.join(views)}" + (
        f"; left {', '.join(dropped)}" if dropped else ""
    )
