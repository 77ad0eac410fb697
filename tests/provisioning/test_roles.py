"""Access granted to a portal Role reaches its members on the target through role membership."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Dataset, Grant, GrantStatus, JobAction, JobStatus, ProvisioningJob
from governance.provisioning import principal_for
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add, role_member_remove
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
QUERY = "SELECT * FROM finance.ledger"


def test_role_grant_reaches_members_and_leaves_with_them(target_source, analyst, owner, gov_admin, make_user):
    role = role_create(actor=gov_admin, name="Finance analysts")
    role_member_add(role=role, user=analyst, actor=gov_admin)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(
        requester=analyst, dataset=ds, justification="close", duration=dt.timedelta(days=5), grantee_role=role
    )
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE)

    db = target_source.database
    member_role = principal_for(source=target_source, user=analyst).db_role
    group_role = principal_for(source=target_source, role=role).db_role
    assert target_can(db, group_role, QUERY)
    wait_for(lambda: target_can(db, member_role, QUERY))  # through GRANT group TO member
    # The target commits before the portal records the outcome: wait for the record too.
    job = wait_for(
        lambda: ProvisioningJob.objects.filter(
            action=JobAction.MEMBERSHIP, membership__user=analyst, status=JobStatus.SUCCEEDED
        ).first()
    )
    assert any(s.startswith(f'GRANT "{group_role}" TO "{member_role}"') for s in job.statements), job.statements

    # A member added later gets it too; one whose membership ends loses it without anyone acting.
    temp = make_user("contractor")
    role_member_add(role=role, user=temp, actor=gov_admin, ends_at=timezone.now() + dt.timedelta(seconds=3))
    temp_role = principal_for(source=target_source, user=temp).db_role
    wait_for(lambda: target_can(db, temp_role, QUERY))
    wait_for(lambda: not target_can(db, temp_role, QUERY), timeout=20)
    assert AuditEvent.objects.filter(action="role.member_expired").count() == 1

    membership = analyst.role_memberships.get(removed_at__isnull=True)
    role_member_remove(membership=membership, actor=gov_admin, reason="moved team")
    wait_for(lambda: not target_can(db, member_role, QUERY))
    assert target_can(db, group_role, QUERY)  # the role keeps its grant


def test_removal_reaches_a_source_where_the_role_no_longer_holds_grants(target_source, analyst, owner, gov_admin):
    """Otherwise the member would stay in the group role, and a later grant would reach them again."""
    from governance.services.grants import grant_revoke
    from tests.provisioning.conftest import admin_connection

    role = role_create(actor=gov_admin, name="Auditors of ledger")
    role_member_add(role=role, user=analyst, actor=gov_admin)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(
        requester=analyst, dataset=ds, justification="audit", duration=dt.timedelta(days=5), grantee_role=role
    )
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    member_role = principal_for(source=target_source, user=analyst).db_role
    group_role = principal_for(source=target_source, role=role).db_role

    def is_member() -> bool:
        conn = admin_connection(target_source.database)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE g.rolname = %s AND r.rolname = %s)",
                [group_role, member_role],
            )
            value = bool(cur.fetchone()[0])
        conn.close()
        return value

    wait_for(is_member)
    grant_revoke(grant=grant, actor=owner, reason="audit over")
    wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists())
    role_member_remove(membership=analyst.role_memberships.get(removed_at__isnull=True), actor=gov_admin)
    wait_for(lambda: not is_member())
