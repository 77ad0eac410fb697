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
from dataclasses import dataclass
from typing import Any, cast

from django.db.models import Q
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from .. import provisioning
from ..models import Dataset, DataSource, DriftFinding, DriftKind, Grant, GrantStatus, JobStatus, ProvisioningJob
from ..provisioners import aws_iam as aws
from ..provisioners import postgres as pg
from .provisioning import object_lock
from .reconcile import Drift, ReconcileFailed, ReconcileResult, _close_fixed, _record, _record_fix_failure

BUSY = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, order=True)
class S3Object:
    """Where an AWS drift is: a bucket and prefix, or ("iam", policy name) for a stray policy. Duck-
    typed like the adapter's ObjectRef (schema, name), without PostgreSQL's 63-byte name limit."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"s3://{self.schema}/{self.name}" if self.schema != "iam" else f"IAM policy {self.name}"


def _obj(schema: str, name: str) -> pg.ObjectRef:
    return cast(pg.ObjectRef, S3Object(schema, name))  # Drift only reads .schema, .name and str()


@dataclass(frozen=True)
class _Wanted:
    plan: aws.Plan
    dataset: Dataset
    ref: provisioning.PrincipalRef


def _desired(source: DataSource) -> tuple[dict[str, _Wanted], set[str], list[str]]:
    """Wanted policies by name; the names of policies a provisioning job is about to change (left
    to it: an approved grant not applied yet, or any job queued or running); and grants that
    cannot be planned (no IAM mapping: reported, not guessed)."""
    grants = list(
        Grant.objects.filter(dataset__source=source, dataset__is_present=True)
        .filter(Q(status=GrantStatus.APPROVED) | Q(status=GrantStatus.ACTIVE) | Q(jobs__status__in=BUSY))
        .select_related("dataset__source", "grantee_user", "grantee_role")
        .distinct()
    )
    busy_grants = set(
        ProvisioningJob.objects.filter(grant__dataset__source=source, status__in=BUSY).values_list(
            "grant_id", flat=True
        )
    )
    refs = provisioning.grant_principals(source, grants)
    groups: dict[tuple[str, int], list[Grant]] = defaultdict(list)
    for grant in grants:
        groups[(refs[grant.pk].db_role, grant.dataset_id)].append(grant)
    now = timezone.now()
    wanted: dict[str, _Wanted] = {}
    busy: set[str] = set()
    unplannable: list[str] = []
    for members in groups.values():
        dataset, ref = members[0].dataset, refs[members[0].pk]
        in_force = [
            g
            for g in members
            if g.status == GrantStatus.ACTIVE and g.revoked_at is None and g.starts_at <= now < g.ends_at
        ]
        try:
            plan = provisioning.aws_plan(dataset=dataset, grants=in_force, ref=ref)
        except pg.PermanentError as exc:
            if in_force:
                unplannable.append(f"{dataset}: {exc.message}")
            continue
        if any(g.pk in busy_grants or g.status == GrantStatus.APPROVED for g in members):
            busy.add(plan.name)
        elif in_force:
            wanted[plan.name] = _Wanted(plan, dataset, ref)
    return wanted, busy, unplannable


def _drift(wanted: dict[str, _Wanted], busy: set[str], observed: list[aws.ManagedPolicy]) -> dict[str, list[Drift]]:
    """The drift found, by the name of the policy it is about (what a repair converges)."""
    by_name = {p.name: p for p in observed}
    found: dict[str, list[Drift]] = defaultdict(list)
    for name, item in sorted(wanted.items()):
        out = found[name]
        plan = item.plan
        obj = _obj(plan.location.bucket, plan.location.prefix or "*")
        who = str(plan.principal)
        held = by_name.get(name)
        if held is None or who not in held.attached_to:
            what = "does not exist" if held is None else f"is not attached to {who}"
            detail = f"missing IAM policy {name}: it {what}"
            out.append(Drift(DriftKind.MISSING, who, obj, "", "POLICY", item.dataset.pk, detail))
        if held is not None and held.document != plan.document:
            detail = f"unexpected DOCUMENT of IAM policy {name}: its default version is not the approved one"
            out.append(Drift(DriftKind.UNEXPECTED, who, obj, "", "DOCUMENT", item.dataset.pk, detail))
        for entity in sorted((held.attached_to if held else frozenset()) - {who}):
            detail = f"unexpected ATTACHMENT of IAM policy {name} to {entity} (only {who} holds this grant)"
            out.append(Drift(DriftKind.UNEXPECTED, entity[:63], obj, "", "ATTACHMENT", item.dataset.pk, detail))
    for held in observed:
        if held.name not in wanted and held.name not in busy:
            attached = ", ".join(sorted(held.attached_to)) or "nothing"
            detail = f"unexpected POLICY {held.name} under the portal's path (attached to {attached}): no grant"
            found[held.name].append(Drift(DriftKind.UNEXPECTED, "", _obj("iam", held.name), "", "POLICY", None, detail))
    return {name: items for name, items in found.items() if items}


def reconcile_aws_source(*, source: DataSource, fix: bool, actor: Any) -> ReconcileResult:
    """The AWS half of :func:`governance.services.reconcile.reconcile_source` (which checks the
    actor and the source first)."""
    started = time.perf_counter()
    result = ReconcileResult(source=source.name, run_id=uuid.uuid4(), fix=fix)
    now = timezone.now()
    wanted, busy, unplannable = _desired(source)
    result.principals = len({str(w.plan.principal) for w in wanted.values()})
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
    by_policy = _drift(wanted, busy, observed)
    result.drift = [item for items in by_policy.values() for item in items]
    result.skipped = len(busy)
    result.errors += unplannable
    # Findings about a policy a job is changing stay as they are (neither new nor gone this run).
    busy_pairs = {(w.principal, w.object_schema, w.object_name) for w in _open_pairs(source, busy)}
    _record(source, result.drift, busy_pairs, result, actor, now)
    if fix and result.drift:
        _fix(source, target, wanted, observed, by_policy, result, actor)
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _open_pairs(source: DataSource, busy: set[str]) -> list[Any]:
    if not busy:
        return []
    rows = DriftFinding.objects.open().filter(source=source)
    return [r for r in rows if any(f"IAM policy {name}" in r.detail for name in busy)]


def _fix(
    source: DataSource,
    target: aws.AwsTarget,
    wanted: dict[str, _Wanted],
    observed: list[aws.ManagedPolicy],
    by_policy: dict[str, list[Drift]],
    result: ReconcileResult,
    actor: Any,
) -> None:
    """Repair under the lock the provisioning jobs take on the dataset, with the grants re-read
    inside it: a revoke or an upgrade that ran since the observation wins."""
    by_pair: dict[tuple[str, str, str], list[Drift]] = defaultdict(list)
    for item in result.drift:
        by_pair[item.pair].append(item)
    arns = {p.name: p.arn for p in observed}
    for name, want in sorted(wanted.items()):
        items = by_policy.get(name, [])
        if not items:
            continue
        started = time.perf_counter()
        try:
            with object_lock(provisioning.lock_key(want.dataset)):
                subject = want.ref.existing
                assert subject is not None  # AWS grantees are always mapped (aws_principal)
                grants = provisioning.active_grants_for(
                    dataset=want.dataset, grantee_user=subject.user, grantee_role=subject.role
                )
                busy = ProvisioningJob.objects.filter(grant__in=grants, status__in=BUSY).exists()
                if busy or not grants:
                    result.skipped += 1  # a job, or the end of the grant, took it over meanwhile
                    continue
                plan = provisioning.aws_plan(dataset=want.dataset, grants=grants, ref=want.ref)
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
        for pair in sorted({d.pair for d in items}):
            _close_fixed(source, pair, by_pair[pair], applied, result, actor)
    for stray in result.drift:
        if stray.privilege != "POLICY" or stray.kind != DriftKind.UNEXPECTED:
            continue
        name = stray.object_name
        started = time.perf_counter()
        try:
            with object_lock(f"aws-policy:{source.pk}:{name}"):
                done = aws.remove_policy(target, arns[name])
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, stray, exc.message, result, actor)
            continue
        applied = pg.ApplyResult("", "", tuple(done), (), (time.perf_counter() - started) * 1000)
        _close_fixed(source, stray.pair, by_pair[stray.pair], applied, result, actor)
