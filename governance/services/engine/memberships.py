"""The membership step: converge `GRANT <role principal> TO <member principal>` on the job's source,
present while the membership is active, absent once it ended or was removed. A job is a group of
its own, under the lock of that (source, role, member)."""

from __future__ import annotations

import json

from ... import provisioning
from ...models import DataSource, ProvisioningJob, RoleMembership
from ...provisioners import postgres as pg
from .attempt import Attempt
from .target import apply_and_verify


def membership_lock_key(job: ProvisioningJob) -> str:
    membership = job.membership
    assert membership is not None
    return json.dumps([job.source_id, "membership", membership.role_id, membership.user_id])


class Memberships:
    def __init__(self, source: DataSource) -> None:
        self.source = source

    def alone(self, attempt: Attempt) -> bool:
        return True

    def prepare(self, attempts: list[Attempt]) -> None:
        return None  # the principals are read under the lock, with the membership's state

    def lock_keys(self, attempts: list[Attempt]) -> list[str]:
        return [membership_lock_key(a.job) for a in attempts]

    def converge(self, attempts: list[Attempt]) -> float:
        (a,) = attempts
        membership = a.job.membership
        assert membership is not None
        source = self.source
        present = RoleMembership.objects.active().filter(pk=membership.pk).exists()
        group = provisioning.principal_for(source=source, role=membership.role)
        member = provisioning.principal_for(source=source, user=membership.user)
        group.ensure_free()
        member.ensure_free()
        parts = []
        if present:
            # No CONNECT of their own: the member inherits it from the group's packages, as it
            # inherits their privileges (docs/provisioning.md, "Access packages").
            parts += [pg.plan_ensure_role(ref.db_role) for ref in (group, member) if ref.managed]
        parts.append(pg.plan_membership(member.db_role, group.db_role, present))
        result = apply_and_verify(
            provisioning.target_for(source),
            pg.Plan.combine(parts),
            membership_lock_key(a.job),
            lambda conn: pg.verify_membership(conn, member.db_role, group.db_role, present),
        )
        a.statements = list(result.statements)
        a.target_ms = result.elapsed_ms
        return result.elapsed_ms
