"""Reconciliation of an AWS source: the IAM policies under the portal's path against the grants.

What IAM should hold is, for each principal with grants in force on the source, its source policy
(:func:`governance.provisioning.aws_source_plan`): one statement group per dataset at the highest
level granted, in one or more numbered parts, attached to that principal only. What it holds is
read with :func:`governance.provisioners.aws_iam.observe`. The differences are recorded as drift
findings exactly like PostgreSQL's (same table, same audit events, same `reconcile` command):

* ``missing POLICY``: a part does not exist, or is not attached to its principal;
* ``unexpected DOCUMENT``: a part's default version is not the planned document (edited by hand,
  or left behind by a lost write), with the datasets it lacks and holds without a grant;
* ``unexpected ATTACHMENT``: a part is attached to another role, user or group as well (by hand);
* ``unexpected POLICY``: a policy under the portal's path that no grant explains, a first-
  generation per-(principal, dataset) policy included (said so in the finding).

``--fix`` rebuilds each drifted principal's source policy with the same apply the jobs use, under
the same lock (new default versions, attach, then the principal's old per-dataset policies are
removed: no moment without access), detaches foreign attachments and deletes unexplained policies,
except those of a principal whose repair failed. Principals with a provisioning job queued or
running, or a grant approved and not applied yet, are left to the job.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

from django.db.models import Q
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from ... import provisioning
from ...models import DataSource, DriftFinding, DriftKind, Grant, GrantStatus, JobStatus, ProvisioningJob
from ...provisioners import aws_iam as aws
from ...provisioners import aws_policy as awsp
from ...provisioners import postgres as pg
from ..locks import object_lock
from .model import Drift, ReconcileFailed, ReconcileResult
from .record import _close_fixed, _record, _record_fix_failure

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
    part: awsp.Part
    plan: awsp.SourcePlan
    ref: provisioning.PrincipalRef


def _desired(source: DataSource) -> tuple[dict[str, _Wanted], set[str], list[str]]:
    """Wanted policy parts by name (each principal's source policy, from its grants in force); the
    principals a provisioning job is about to change (left to it: an approved grant not applied
    yet, or any job queued or running); and grants that cannot be planned (no IAM mapping:
    reported, not guessed)."""
    grants = list(
        Grant.objects.provisioned()
        .filter(dataset__source=source)
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
    groups: dict[str, list[Grant]] = defaultdict(list)
    for grant in grants:
        groups[refs[grant.pk].db_role].append(grant)
    now = timezone.now()
    wanted: dict[str, _Wanted] = {}
    busy: set[str] = set()
    unplannable: list[str] = []
    for principal, members in groups.items():
        ref = refs[members[0].pk]
        in_force = [g for g in members if g.status == GrantStatus.ACTIVE and g.is_in_force(now)]
        if any(g.pk in busy_grants or g.status == GrantStatus.APPROVED for g in members):
            busy.add(principal)
            continue
        try:
            plan = provisioning.aws_source_plan(source=source, grants=in_force, ref=ref)
        except pg.PermanentError as exc:
            if in_force:
                unplannable.append(f"{principal}: {exc.message}")
            continue
        for part in plan.parts:
            wanted[part.name] = _Wanted(part, plan, ref)
    return wanted, busy, unplannable


def _owner(name: str, held: aws.ManagedPolicy, principals: set[str], source: str) -> str | None:
    """Which of `principals` a policy under the portal's path belongs to: one of its source policy
    parts, a first-generation per-dataset policy of it, or one attached to it."""
    for who in sorted(principals):
        principal = aws.IamPrincipal.parse(who)
        if awsp.is_part_name(principal, source, name) or awsp.is_legacy_name(principal, name):
            return who
    return next((who for who in sorted(held.attached_to) if who in principals), None)


def _drift(
    wanted: dict[str, _Wanted], busy_names: set[str], observed: list[aws.ManagedPolicy]
) -> dict[str, list[Drift]]:
    """The drift found, by the name of the policy it is about (what a repair converges)."""
    by_name = {p.name: p for p in observed}
    found: dict[str, list[Drift]] = defaultdict(list)
    for name, item in sorted(wanted.items()):
        out = found[name]
        obj = _obj("iam", name)
        who = str(item.plan.principal)
        held = by_name.get(name)
        if held is None or who not in held.attached_to:
            what = "does not exist" if held is None else f"is not attached to {who}"
            detail = f"missing IAM policy {name}: it {what}"
            out.append(Drift(DriftKind.MISSING, who, obj, "", "POLICY", None, detail))
        if held is not None and held.document != item.part.document:
            ids = awsp.dataset_ids(held.document)
            lacking = ", ".join(f"#{pk}" for pk in sorted(item.part.datasets - ids)) or "none"
            extra = ", ".join(f"#{pk}" for pk in sorted(ids - item.part.datasets)) or "none"
            detail = (
                f"unexpected DOCUMENT of IAM policy {name}: its default version is not the planned one "
                f"(datasets missing: {lacking}; not granted: {extra})"
            )
            out.append(Drift(DriftKind.UNEXPECTED, who, obj, "", "DOCUMENT", None, detail))
        for entity in sorted((held.attached_to if held else frozenset()) - {who}):
            detail = f"unexpected ATTACHMENT of IAM policy {name} to {entity} (only {who} holds this grant)"
            out.append(Drift(DriftKind.UNEXPECTED, entity[:63], obj, "", "ATTACHMENT", None, detail))
    for held in observed:
        if held.name not in wanted and held.name not in busy_names:
            attached = ", ".join(sorted(held.attached_to)) or "nothing"
            what = (
                "a first-generation per-dataset policy, replaced by the source policy"
                if _LEGACY.match(held.name)
                else "no grant"
            )
            detail = f"unexpected POLICY {held.name} under the portal's path (attached to {attached}): {what}"
            found[held.name].append(Drift(DriftKind.UNEXPECTED, "", _obj("iam", held.name), "", "POLICY", None, detail))
    return {name: items for name, items in found.items() if items}


_LEGACY = re.compile(r"^gov-(user|role)-.*-d\d+-[0-9a-f]{10}$")


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
    # The policies of a principal a job is changing: its parts, its old per-dataset policies, and
    # whatever is attached to it (left to the job, neither reported nor repaired this run).
    busy_names = {p.name for p in observed if _owner(p.name, p, busy, source.name) is not None}
    by_policy = _drift(wanted, busy_names, observed)
    result.drift = [item for items in by_policy.values() for item in items]
    result.skipped = len(busy)
    result.errors += unplannable
    # Findings about a policy a job is changing stay as they are (neither new nor gone this run).
    busy_pairs = {(w.principal, w.object_schema, w.object_name) for w in _open_pairs(source, busy_names)}
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
    """Repair each principal's source policy under the lock its provisioning jobs take, with its
    grants re-read inside it (a revoke or an upgrade that ran since the observation wins); then
    delete the policies no grant explains, except those of a principal whose repair failed (its
    old per-dataset policies still hold its access)."""
    by_pair: dict[tuple[str, str, str], list[Drift]] = defaultdict(list)
    for item in result.drift:
        by_pair[item.pair].append(item)
    arns = {p.name: p.arn for p in observed}
    principals: dict[str, list[_Wanted]] = defaultdict(list)
    for _name, want in sorted(wanted.items()):
        principals[str(want.plan.principal)].append(want)
    failed: set[str] = set()
    for who, wants in sorted(principals.items()):
        items = [d for want in wants for d in by_policy.get(want.part.name, [])]
        if not items:
            continue
        started = time.perf_counter()
        subject = wants[0].ref.existing
        assert subject is not None  # AWS grantees are always mapped (aws_principal)
        try:
            with object_lock(provisioning.aws_lock_key(source.pk, subject.user_id, subject.role_id)):
                grants = provisioning.aws_grants_for(
                    source=source, grantee_user=subject.user, grantee_role=subject.role
                )
                mine = Grant.objects.filter(
                    dataset__source=source, grantee_user=subject.user, grantee_role=subject.role
                )
                if ProvisioningJob.objects.filter(grant__in=mine, status__in=BUSY).exists() or not grants:
                    result.skipped += 1  # a job, or the end of the grants, took it over meanwhile
                    failed.add(who)
                    continue
                plan = provisioning.aws_source_plan(source=source, grants=grants, ref=wants[0].ref)
                done = awsp.apply(target, plan)
                for name in plan.names:
                    if name in arns:
                        done += aws.detach_others(target, arns[name], keep=str(plan.principal))
                problems = awsp.verify(target, plan)
                if problems:
                    raise pg.PermanentError("Verification failed after repair: " + "; ".join(problems))
        except pg.ProvisioningError as exc:
            failed.add(who)
            _record_fix_failure(source, items[0], exc.message, result, actor)
            continue
        applied = pg.ApplyResult("", "", tuple(done), (), (time.perf_counter() - started) * 1000)
        for pair in sorted({d.pair for d in items}):
            _close_fixed(source, pair, by_pair[pair], applied, result, actor)
    held = {p.name: p for p in observed}
    for stray in result.drift:
        if stray.privilege != "POLICY" or stray.kind != DriftKind.UNEXPECTED:
            continue
        name = stray.object_name
        if _owner(name, held[name], failed, source.name) is not None:
            continue  # its principal's source policy is not in place: this one still holds access
        started = time.perf_counter()
        try:
            with object_lock(f"aws-policy:{source.pk}:{name}"):
                done = aws.remove_policy(target, arns[name])
        except pg.ProvisioningError as exc:
            _record_fix_failure(source, stray, exc.message, result, actor)
            continue
        applied = pg.ApplyResult("", "", tuple(done), (), (time.perf_counter() - started) * 1000)
        _close_fixed(source, stray.pair, by_pair[stray.pair], applied, result, actor)
