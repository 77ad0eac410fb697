"""Reconciliation of an AWS source: the IAM policies under the portal's path against the grants.

What IAM should hold is one policy per (principal, dataset) with an active grant, at the highest
level granted, attached to that principal only (:func:`governance.provisioning.aws_plan`). What it
holds is read with :func:`governance.provisioners.aws_iam.observe`. The differences are recorded as
drift findings exactly like PostgreSQL's (same table, same audit events, same `reconcile` command):

* ``missing POLICY``: the policy does not exist, or is not attached to its principal;
* ``unexpected DOCUMENT``: its default version is not the approved document (edited by hand);
* ``unexpected ATTACHMENT``: it is attached to another role, user or group as well (by hand);
* ``unexpected POLICY``: a policy under the portal's path that no active grant explains.

``--fix`` converges each (principal, dataset) with the same apply the jobs use (new default
version, attach), detaches foreign attachments and deletes unexplained policies. Pairs with a
provisioning job queued or running are left to that job.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from .. import provisioning
from ..models import DataSource, DriftKind, Grant, GrantStatus, JobStatus, ProvisioningJob
from ..provisioners import aws_iam as aws
from ..provisioners import postgres as pg
from .provisioning import object_lock
from .reconcile import Drift, ReconcileFailed, ReconcileResult, _close_fixed, _record, _record_fix_failure


def _desired(source: DataSource) -> tuple[dict[str, tuple[aws.Plan, int]], set[tuple[str, str, str]], list[str]]:
    """Plans by policy name (with their dataset id), pairs in flight, and grants that cannot be
    planned (no IAM mapping: reported, not guessed)."""
    grants = list(
        Grant.objects.active()
        .filter(dataset__source=source, status=GrantStatus.ACTIVE, dataset__is_present=True)
        .select_related("dataset__source", "grantee_user", "grantee_role")
    )
    in_flight_grants = set(
        ProvisioningJob.objects.filter(
            grant__dataset__source=source, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).values_list("grant_id", flat=True)
    )
    refs = provisioning.grant_principals(source, grants)
    groups: dict[tuple[str, int], list[Grant]] = defaultdict(list)
    for grant in grants:
        groups[(refs[grant.pk].db_role, grant.dataset_id)].append(grant)
    plans: dict[str, tuple[aws.Plan, int]] = {}
    in_flight: set[tuple[str, str, str]] = set()
    unplannable: list[str] = []
    for (_, dataset_id), members in groups.items():
        dataset, ref = members[0].dataset, refs[members[0].pk]
        try:
            plan = provisioning.aws_plan(dataset=dataset, grants=members, ref=ref)
        except pg.PermanentError as exc:
            unplannable.append(f"{dataset}: {exc.message}")
            continue
        if any(g.pk in in_flight_grants for g in members):
            in_flight.add((str(plan.principal), plan.location.bucket, plan.location.prefix or "*"))
            continue
        plans[plan.name] = (plan, dataset_id)
    return plans, in_flight, unplannable


def _drift(plans: dict[str, tuple[aws.Plan, int]], observed: list[aws.ManagedPolicy]) -> list[Drift]:
    by_name = {p.name: p for p in observed}
    out: list[Drift] = []
    for name, (plan, dataset_id) in sorted(plans.items()):
        obj = pg.ObjectRef(plan.location.bucket, plan.location.prefix or "*")
        who = str(plan.principal)
        held = by_name.get(name)
        if held is None or who not in held.attached_to:
            what = "does not exist" if held is None else f"is not attached to {who}"
            out.append(
                Drift(DriftKind.MISSING, who, obj, "", "POLICY", dataset_id, f"missing IAM policy {name}: it {what}")
            )
        if held is not None and held.document != plan.document:
            detail = f"unexpected DOCUMENT of IAM policy {name}: its default version is not the approved one"
            out.append(Drift(DriftKind.UNEXPECTED, who, obj, "", "DOCUMENT", dataset_id, detail))
        for entity in sorted((held.attached_to if held else frozenset()) - {who}):
            detail = f"unexpected ATTACHMENT of IAM policy {name} to {entity} (only {who} holds this grant)"
            out.append(Drift(DriftKind.UNEXPECTED, entity, obj, "", "ATTACHMENT", dataset_id, detail))
    for held in observed:
        if held.name not in plans:
            attached = ", ".join(sorted(held.attached_to)) or "nothing"
            detail = (
                f"unexpected POLICY {held.name} under the portal's path (attached to {attached}): no grant explains it"
            )
            obj = pg.ObjectRef("iam", held.name)
            out.append(Drift(DriftKind.UNEXPECTED, "", obj, "", "POLICY", None, detail))
    return out


def reconcile_aws_source(*, source: DataSource, fix: bool, actor: Any) -> ReconcileResult:
    """The AWS half of :func:`governance.services.reconcile.reconcile_source` (which checks the
    actor and the source first)."""
    started = time.perf_counter()
    result = ReconcileResult(source=source.name, run_id=uuid.uuid4(), fix=fix)
    now = timezone.now()
    plans, in_flight, unplannable = _desired(source)
    result.principals = len({str(p.principal) for p, _ in plans.values()})
    target = provisioning.aws_target_for(source)
    try:
        observed = list(aws.observe(target, source.name))
    except pg.ProvisioningError as exc:
        failure = ReconcileFailed(f"Could not read IAM for {source.name}: {exc.message}")
        audit.record(
            action="reconcile.run",
            actor=actor,
            target=source,
            outcome=Outcome.FAILED,
            reason=failure.message,
            metadata={"run": result.run_id, "fix": fix},
        )
        raise failure from None
    result.drift = _drift(plans, observed)
    result.skipped = len(in_flight)
    result.errors += unplannable
    _record(source, result.drift, in_flight, result, actor, now)
    if fix and result.drift:
        _fix(source, target, plans, observed, result, actor)
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _fix(
    source: DataSource,
    target: aws.AwsTarget,
    plans: dict[str, tuple[aws.Plan, int]],
    observed: list[aws.ManagedPolicy],
    result: ReconcileResult,
    actor: Any,
) -> None:
    by_pair: dict[tuple[str, str, str], list[Drift]] = defaultdict(list)
    for item in result.drift:
        by_pair[item.pair].append(item)
    arns = {p.name: p.arn for p in observed}
    for name, (plan, _) in sorted(plans.items()):
        items = [i for i in result.drift if f"IAM policy {name}" in i.detail or f"of IAM policy {name} " in i.detail]
        if not items:
            continue
        started = time.perf_counter()
        try:
            with object_lock(f"aws:{source.pk}:{name}"):
                done = aws.apply(target, plan)
                if name in arns:
                    done += aws.detach_others(target, arns[name], keep=str(plan.principal))
                problems = aws.verify(target, plan)
                if problems:
                    raise pg.PermanentError("Verification failed after repair: " + "; ".join(problems))
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, items[0], exc.message, result, actor)
            continue
        applied = pg.ApplyResult("", "", tuple(done), (), (time.perf_counter() - started) * 1000)
        for pair in sorted({i.pair for i in items}):
            _close_fixed(source, pair, by_pair[pair], applied, result, actor)
    for held in observed:
        if held.name in plans:
            continue
        items = by_pair[("", "iam", held.name)]
        started = time.perf_counter()
        try:
            with object_lock(f"aws:{source.pk}:{held.name}"):
                done = aws.remove_policy(target, held.arn)
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, items[0], exc.message, result, actor)
            continue
        applied = pg.ApplyResult("", "", tuple(done), (), (time.perf_counter() - started) * 1000)
        _close_fixed(source, ("", "iam", held.name), items, applied, result, actor)
