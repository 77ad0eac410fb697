"""The AWS step of a provisioning job: rebuild the grantee's policy on the source and read it back.

Called by :func:`governance.services.provisioning._execute` under the lock of the grantee's source
policy (:meth:`governance.backends.AwsBackend.lock_key`), so that two jobs of one principal on one
source run one after the other; each rebuilds the whole policy from every grant in force of that
grantee on the source (read here, after the lock was taken), so neither loses the other's
statements. Writes nothing in the portal: the caller records the outcome and its audit event.
"""

from __future__ import annotations

import time

from .. import provisioning
from ..models import Grant
from ..provisioners import aws_policy as awsp
from ..provisioners import postgres as pg


def execute(grant: Grant, ref: provisioning.PrincipalRef, *, including: Grant | None) -> tuple[list[str], float]:
    """Converge and verify the grantee's source policy; `including` is the job's own grant when it
    is an apply still in force (its digest was checked), none for a revoke."""
    source = grant.dataset.source
    grants = provisioning.aws_grants_for(
        source=source, grantee_user=grant.grantee_user, grantee_role=grant.grantee_role, including=including
    )
    plan = provisioning.aws_source_plan(source=source, grants=grants, ref=ref)
    target = provisioning.aws_target_for(source)
    started = time.perf_counter()
    done = awsp.apply(target, plan)
    problems = awsp.verify(target, plan)
    if problems:
        raise pg.PermanentError("Verification failed after apply: " + "; ".join(problems))
    if not done:
        done = [f"-- {plan.path}{name}: already as planned" for name in plan.names] or ["-- no policy: nothing held"]
    return done, (time.perf_counter() - started) * 1000
