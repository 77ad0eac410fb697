"""Issue 16: deactivating a person through SCIM revokes all their access, verified in the target.

A real target PostgreSQL (tests/tls_target.py), a real Celery worker: the person's principal can
SELECT through a personal grant and through a Role they hold by a SCIM group; one PATCH active=false
later, it can do neither, the personal grant is Revoked, every membership (portal and SCIM) is
ended, and every event names the SCIM client as actor.
"""

from __future__ import annotations

import datetime as dt

import pytest

from accounts.models import User
from audit.models import AuditEvent
from governance.models import Dataset, Grant, GrantStatus, JobStatus, ProvisioningJob, RoleMembership
from governance.provisioning import principal_for
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add
from identity.services.mappings import mapping_create
from tests.identity.scim.conftest import GROUP
from tests.provisioning.conftest import settle_jobs, target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.usefixtures("celery_worker")]
LEDGER = "SELECT * FROM finance.ledger"
CUSTOMERS = 'SELECT * FROM "Sales EU".customers'


def test_scim_deactivation_revokes_every_grant_and_membership_on_the_target(
    target_source, analyst, owner, gov_admin, scim, idp_account
):
    db = target_source.database
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    customers = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")

    # The provider finds the existing portal user by userName, and puts them in a mapped group.
    found = scim.get("/Users?filter=userName%20eq%20%22analyst%22").json_body
    assert found["totalResults"] == 1
    uid = found["Resources"][0]["id"]
    sales = role_create(actor=gov_admin, name="Sales readers")
    mapping_create(actor=gov_admin, idp_group="sales", role=sales)
    assert (
        scim.post("/Groups", {"schemas": [GROUP], "displayName": "Sales", "members": [{"value": uid}]}).status_code
        == 201
    )
    finance = role_create(actor=gov_admin, name="Finance readers")
    role_member_add(role=finance, user=analyst, actor=gov_admin)  # added in the portal: ends too

    personal = access_request_submit(
        requester=analyst, dataset=ledger, justification="close", duration=dt.timedelta(days=3)
    )
    access_request_approve(access_request=personal, approver=owner)
    for_role = access_request_submit(
        requester=analyst, dataset=customers, justification="sales", duration=dt.timedelta(days=3), grantee_role=sales
    )
    access_request_approve(access_request=for_role, approver=owner)
    grant = Grant.objects.get(source_request=personal)
    role_grant = Grant.objects.get(source_request=for_role)
    wait_for(lambda: Grant.objects.filter(pk__in=[grant.pk, role_grant.pk], status=GrantStatus.ACTIVE).count() == 2)

    person = principal_for(source=target_source, user=analyst).db_role
    wait_for(lambda: target_can(db, person, LEDGER))
    wait_for(lambda: target_can(db, person, CUSTOMERS))  # through the SCIM group's Role
    settle_jobs()

    response = scim.patch(f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    assert response.status_code == 200, response.json_body
    assert response.json_body["active"] is False

    wait_for(lambda: not target_can(db, person, LEDGER))
    wait_for(lambda: not target_can(db, person, CUSTOMERS))
    assert Grant.objects.get(pk=grant.pk).status == GrantStatus.REVOKED
    assert Grant.objects.get(pk=role_grant.pk).status == GrantStatus.ACTIVE  # the Role keeps its grant
    assert not RoleMembership.objects.filter(user=analyst, removed_at__isnull=True).exists()
    assert not User.objects.get(pk=analyst.pk).is_active
    wait_for(lambda: not ProvisioningJob.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists())
    assert not ProvisioningJob.objects.exclude(status=JobStatus.SUCCEEDED).exists()

    revoked = AuditEvent.objects.get(action="grant.revoked")
    assert (revoked.actor_id, revoked.target_id) == (idp_account.pk, str(grant.pk))
    removed = AuditEvent.objects.filter(action="role.member_removed")
    assert {e.actor_id for e in removed} == {idp_account.pk} and removed.count() == 2
    assert AuditEvent.objects.get(action="user.offboarded").actor_id == idp_account.pk
