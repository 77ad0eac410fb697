"""Changes to governed tables by any path leave a history row: through the portal with who and
from where, and behind its back (raw SQL, a DBA's session) with no portal context — which is how
an auditor tells them apart. They are listed in the admin beside the audit events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts.models import User
from governance.models import Dataset, Grant
from governance.services.requests import access_request_approve, access_request_submit
from tests.db import admin_connection

pytestmark = pytest.mark.django_db(transaction=True)


def grant_for(analyst: User, owner: User, officer: User, dataset: Dataset) -> Grant:
    req = access_request_submit(requester=analyst, dataset=dataset, justification="x", duration=dt.timedelta(days=3))
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    return Grant.objects.get(source_request=req)


def history(grant: Grant) -> list[Any]:
    from governance.models import GrantEvent  # type: ignore[attr-defined]

    return list(GrantEvent.objects.filter(pgh_obj_id=grant.pk).select_related("pgh_context").order_by("pgh_id"))


def test_raw_sql_on_a_governed_table_is_recorded_without_portal_context(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset
) -> None:
    grant = grant_for(analyst, owner, officer, restricted_dataset)
    before = len(history(grant))
    # A DBA extends the grant by hand, in their own session, not through the portal.
    dba = admin_connection(connection.settings_dict["NAME"])
    with dba, dba.cursor() as cur:
        cur.execute("UPDATE governance_grant SET ends_at = ends_at + interval '365 days' WHERE id = %s", [grant.pk])
    dba.close()
    events = history(grant)
    assert len(events) == before + 1
    by_hand = events[-1]
    assert by_hand.pgh_label == "update" and by_hand.pgh_context is None  # no portal context: behind its back
    assert by_hand.ends_at - events[-2].ends_at == dt.timedelta(days=365)


def test_changes_through_the_portal_carry_who_and_where(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset, superuser: User
) -> None:
    grant = grant_for(analyst, owner, officer, restricted_dataset)
    client = Client()
    client.force_login(owner)
    response = client.post(f"/portal/grants/{grant.pk}/relinquish/")  # not the grantee: refused
    assert response.status_code == 404
    analyst_client = Client()
    analyst_client.force_login(analyst)
    analyst_client.post(f"/portal/grants/{grant.pk}/relinquish/", {"reason": "done"})
    revoked = next(e for e in history(grant) if e.revoked_at is not None)
    metadata = revoked.pgh_context.metadata
    assert metadata["user"] == analyst.pk and metadata["source"] == "web" and metadata["request_id"]
    # The admin lists the history beside the audit events.
    admin = Client()
    admin.force_login(superuser)
    page = admin.get("/admin/pghistory/events/")
    assert page.status_code == 200 and "governance.GrantEvent" in page.content.decode()


def test_deleting_a_governed_row_by_hand_keeps_its_last_values(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset
) -> None:
    """Covering up who approved: the approval row is deleted by hand, its history keeps it."""
    from governance.models import Approval, ApprovalEvent  # type: ignore[attr-defined]

    grant = grant_for(analyst, owner, officer, restricted_dataset)
    approval = Approval.objects.get(request=grant.source_request, approver=owner)
    dba = admin_connection(connection.settings_dict["NAME"])
    with dba, dba.cursor() as cur:
        cur.execute("DELETE FROM governance_approval WHERE id = %s", [approval.pk])
    dba.close()
    assert not Approval.objects.filter(pk=approval.pk).exists()
    deleted = ApprovalEvent.objects.get(pgh_obj_id=approval.pk, pgh_label="delete")
    assert deleted.approver_id == owner.pk and deleted.decision == "approved" and deleted.pgh_context is None
