"""The PostgreSQL step (`Converges.OBJECT`): each grant job converges one (principal, table) pair,
and the pairs of a group share one target transaction and one verification query.

For one job or for five hundred alike (a bulk approval, an import, the sweeper after an outage: see
`batched_publishing()`), the work is:

- prepare: the grantees' principals in one query; each apply's plan digest against what its
  approvers saw (the dataset facts of all its datasets in one query);
- under the portal locks of all the group's tables (in key order: two groups, or a group and a
  reconciler repair, never wait on each other in a cycle), read the desired state of every pair
  in one query: the grants already active plus the group's own applies that are still in force
  (re-read under the lock: one may have been revoked since it was queued); a revoke, or an apply
  whose grant ended meanwhile, leaves its grant's package once nothing in force needs it;
- apply one combined plan: `CREATE ROLE` and `GRANT USAGE` once per principal and schema, the
  package and membership statements per pair (see `pg.apply` for its target-side locks);
- verify every pair in one query (`verify_check`, in the round trip of the COMMIT).

A job whose target work goes beyond the converge runs in a group of its own (`alone`): a grant
with a JIT login (created after the converge, or ended before it) and a revoke that ends the
grantee's sessions (after it). A pair that fails verification fails its jobs with the difference;
the others of the group are recorded as done.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from ... import provisioning
from ...backends import plan_digest
from ...models import DataSource, Grant, GrantStatus, JobAction
from ...models.grants import in_force_q
from ...provisioners import pg_packages as pgp
from ...provisioners import pg_row_filters as pgr
from ...provisioners import postgres as pg
from .. import jit, revocation
from .attempt import Attempt, plan_changed, verification_failed
from .target import apply_then

# A pair: the (dataset, grantee) whose privileges one converge sets; grantee = ("u", id) or ("r", id).
Pair = tuple[int, str, int]


def pair_of(grant: Grant) -> Pair:
    if grant.grantee_user_id is not None:
        return (grant.dataset_id, "u", grant.grantee_user_id)
    assert grant.grantee_role_id is not None
    return (grant.dataset_id, "r", grant.grantee_role_id)


class Tables:
    def __init__(self, source: DataSource) -> None:
        self.source = source
        # An apply's own desired state and plan, as its digest was checked: reused when its pair
        # holds nothing else (the common case), instead of planning it twice.
        self.own: dict[int, tuple[pg.Desired, pg.Plan]] = {}

    def alone(self, attempt: Attempt) -> bool:
        grant = attempt.grant
        return bool(grant.jit_role) or (
            attempt.job.action == JobAction.REVOKE and revocation.terminates_sessions(grant)
        )

    def prepare(self, attempts: list[Attempt]) -> None:
        principals = provisioning.grant_principals(self.source, [a.grant for a in attempts])
        checked = [a for a in attempts if a.job.action == JobAction.APPLY and a.grant.plan_digest]
        facts = provisioning.dataset_facts({a.grant.dataset_id for a in checked}) if checked else {}
        for a in attempts:
            grant = a.grant
            a.ref = ref = principals[grant.pk]
            try:
                ref.ensure_free()
                if a in checked:
                    mine = provisioning.own_desired(grant, ref)
                    plan = pgp.plan_converge(mine, managed_principal=ref.managed, database=self.source.database)
                    if plan_digest(grant, ref, facts[grant.dataset_id], plan) != grant.plan_digest:
                        raise plan_changed()
                    self.own[grant.pk] = (mine, plan)
            except pg.PermanentError as exc:
                a.error = exc

    def lock_keys(self, attempts: list[Attempt]) -> list[str]:
        return [provisioning.lock_key(a.grant.dataset) for a in attempts]

    def converge(self, attempts: list[Attempt]) -> float:
        pairs, desired, plans = self._desired_state(attempts)
        only = attempts[0] if len(attempts) == 1 else None
        before: list[str] = []
        login_failed: pg.PermanentError | None = None
        if only is not None and only.job.action == JobAction.REVOKE:
            # The temporary login goes first and regardless of the table step: it is a member of the
            # grantee's role and would otherwise keep everything that role holds. If it cannot be
            # dropped for good, the table step still runs; then the job fails with its error.
            try:
                before = jit.jit_after_revoke(job=only.job)
            except pg.PermanentError as exc:
                login_failed = exc
        plan = pg.Plan.combine([plans[p] for p in pairs])
        ordered = [desired[p] for p in pairs]
        policies = pgr.expected_policies(ordered)
        result, problems = apply_then(
            provisioning.target_for(self.source),
            plan,
            plan.lock_keys[0],
            # Under row filters the policies are verified too, in a round trip of their own.
            (lambda conn: pgr.verify_with_policies(conn, ordered, policies, pgp.verify_many)) if policies else None,
            after_commit=None if policies else lambda conn: pgp.verify_check(conn, ordered),
        )
        found = dict(zip(pairs, problems, strict=True))
        executed = set(result.statements)
        lines: dict[Pair, list[str]] = {}
        for p in pairs:  # each executed line once, on the first pair whose plan has it
            lines[p] = [line for line in plans[p].lines if line in executed]
            executed -= set(lines[p])
        for a in attempts:
            p = pair_of(a.grant)
            a.target_ms = result.elapsed_ms / len(attempts)
            if found[p]:
                a.error = verification_failed(found[p])
            else:
                a.statements = lines[p] + before
        if only is not None and only.error is None:
            if only.job.action == JobAction.REVOKE:
                assert only.ref is not None
                only.statements += revocation.grantee_sessions_end(
                    grant=only.grant, principal=only.ref.db_role, job_id=only.job.pk
                )
            if login_failed is not None:
                raise login_failed
            if only.job.action == JobAction.APPLY:
                only.statements += jit.jit_after_apply(job=only.job)  # the grant's JIT login, if it asked for one
        return result.elapsed_ms

    def _desired_state(self, attempts: list[Attempt]) -> tuple[list[Pair], dict[Pair, pg.Desired], dict[Pair, pg.Plan]]:
        """Per pair, read with the object locks held, in one query: the grants already active, plus
        the group's applies still in force. The group's own grants are re-read in the same query
        (status, end, revocation: they may have changed since the claim)."""
        now = timezone.now()
        own = {a.grant.pk: a.grant for a in attempts}
        applying = {a.grant.pk for a in attempts if a.job.action == JobAction.APPLY}
        by_pair: dict[Pair, dict[int, Grant]] = {}
        stale: dict[Pair, list[Grant]] = {}
        ref: dict[Pair, provisioning.PrincipalRef] = {}
        dataset: dict[Pair, Any] = {}
        for a in attempts:
            p = pair_of(a.grant)
            by_pair.setdefault(p, {})
            stale.setdefault(p, []).append(a.grant)
            assert a.ref is not None
            ref[p] = a.ref
            dataset[p] = a.grant.dataset
        users = {p[2] for p in by_pair if p[1] == "u"}
        roles = {p[2] for p in by_pair if p[1] == "r"}
        rows = (
            Grant.objects.provisioned()
            .filter(
                Q(pk__in=own)
                | (
                    in_force_q(now)
                    & Q(status=GrantStatus.ACTIVE, dataset_id__in={p[0] for p in by_pair})
                    & (Q(grantee_user_id__in=users) | Q(grantee_role_id__in=roles))
                )
            )
            .only(
                "pk",
                "dataset_id",
                "grantee_user_id",
                "grantee_role_id",
                "level",
                "columns",
                "treatments",
                "status",
                "revoked_at",
                "starts_at",
                "ends_at",
            )
        )
        for grant in rows:
            if grant.pk in own:
                mine = own[grant.pk]
                mine.status, mine.revoked_at, mine.starts_at, mine.ends_at = (
                    grant.status, grant.revoked_at, grant.starts_at, grant.ends_at,
                )  # fmt: skip
            p = pair_of(grant)
            if p in by_pair and grant.is_in_force(now) and (grant.pk in applying or grant.status == GrantStatus.ACTIVE):
                by_pair[p][grant.pk] = grant
        pairs = sorted(by_pair)
        desired: dict[Pair, pg.Desired] = {}
        plans: dict[Pair, pg.Plan] = {}
        for p in pairs:
            held, leaving = by_pair[p], [g.pk for g in stale[p]]
            if list(held) == leaving and len(leaving) == 1 and leaving[0] in self.own:
                desired[p], plans[p] = self.own[leaving[0]]  # the job's own grant and nothing else
                continue
            desired[p] = provisioning.desired_for(
                dataset=dataset[p], grants=held.values(), principal=ref[p].db_role, stale=stale[p]
            )
            plans[p] = pgp.plan_converge(
                desired[p], managed_principal=ref[p].managed, database=dataset[p].source.database
            )
        return pairs, desired, plans
