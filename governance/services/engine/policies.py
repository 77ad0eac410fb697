"""The AWS step (`Converges.PRINCIPAL_POLICY`): rebuild the grantee's policy on the source and read
it back.

The job holds the lock of the grantee's source policy (:meth:`governance.backends.AwsBackend.lock_key`),
so that two jobs of one principal on one source run one after the other; each rebuilds the whole
policy from every grant in force of that grantee on the source (read here, after the lock was
taken), so neither loses the other's statements. A job is always a group of its own: IAM has no
transaction to share.
"""

from __future__ import annotations

import time

from ... import provisioning
from ...backends import backend_for, plan_digest
from ...models import DataSource, JobAction
from ...provisioners import aws_policy as awsp
from ...provisioners import postgres as pg
from .attempt import Attempt, plan_changed, verification_failed


class Policies:
    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.backend = backend_for(source)

    def alone(self, attempt: Attempt) -> bool:
        return True

    def prepare(self, attempts: list[Attempt]) -> None:
        for a in attempts:
            grant = a.grant
            try:
                a.ref = ref = provisioning.grant_principal(grant)
                ref.ensure_free()
                self.backend.check_principal(self.source, ref)  # "no IAM identity mapped" before "plan changed"
                if (
                    a.job.action == JobAction.APPLY
                    and grant.plan_digest
                    and plan_digest(grant, ref) != grant.plan_digest
                ):
                    raise plan_changed()
            except pg.PermanentError as exc:
                a.error = exc

    def lock_keys(self, attempts: list[Attempt]) -> list[str]:
        return [self.backend.lock_key(a.grant) for a in attempts]

    def converge(self, attempts: list[Attempt]) -> float:
        (a,) = attempts
        grant = a.grant
        assert a.ref is not None
        grant.refresh_from_db(fields=["status", "revoked_at", "starts_at", "ends_at"])  # under the lock
        # An apply contributes its own grant (its digest was checked); a revoke contributes nothing.
        including = grant if a.job.action == JobAction.APPLY and grant.is_in_force() else None
        grants = provisioning.aws_grants_for(
            source=self.source, grantee_user=grant.grantee_user, grantee_role=grant.grantee_role, including=including
        )
        plan = provisioning.aws_source_plan(source=self.source, grants=grants, ref=a.ref)
        target = provisioning.aws_target_for(self.source)
        started = time.perf_counter()
        done = awsp.apply(target, plan)
        problems = awsp.verify(target, plan)
        if problems:
            raise verification_failed(problems)
        if not done:
            done = [f"-- {plan.path}{name}: already as planned" for name in plan.names] or [
                "-- no policy: nothing held"
            ]
        a.statements = done
        a.target_ms = (time.perf_counter() - started) * 1000
        return a.target_ms
