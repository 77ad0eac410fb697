"""Offboarding: every personal grant revoked and every role membership ended, whoever manages it,
in one transaction, queued for the targets, audited with the caller as actor."""

from __future__ import annotations

import datetime as dt

import pytest

from audit.models import AuditEvent
from governance.errors import InvalidInput, NotPermitted
from governance.models import Grant, GrantStatus, MembershipSource, RoleMembership
from governance.services.grants import grant_revoke
from governance.services.offboarding import user_offboard
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add, role_member_sync_add

pytestmark = pytest.mark.django_db
DAYS = dt.timedelta(days=1)


@pytest.fixture
def leaver_world(analyst, owner, gov_admin, make_dataset):
    grants = []
    for name in ("orders", "invoices", "refunds"):
        req = access_request_submit(requester=analyst, dataset=make_dataset(name, owner=owner), duration=7 * DAYS)
        access_request_approve(access_request=req, approver=owner)
        grants.append(Grant.objects.get(source_request=req))
    grant_revoke(grant=grants[2], actor=owner, reason="done earlier")  # already over: left as it is
    by_admin = role_create(actor=gov_admin, name="Finance")
    role_member_add(role=by_admin, user=analyst, actor=gov_admin)
    by_scim = role_create(actor=gov_admin, name="Sales")
    role_member_sync_add(role=by_scim, user=analyst, managed_by=MembershipSource.SCIM)
    return grants


def test_offboarding_revokes_every_grant_and_ends_every_membership(leaver_world, analyst, officer):
    result = user_offboard(user=analyst, actor=officer, reason="Left the company")
    assert sorted(result.grants_revoked) == sorted(g.pk for g in leaver_world[:2])
    assert len(result.memberships_ended) == 2 and result.deactivated
    assert Grant.objects.filter(grantee_user=analyst, status=GrantStatus.REVOKED).count() == 3
    assert not RoleMembership.objects.filter(user=analyst, removed_at__isnull=True).exists()
    analyst.refresh_from_db()
    assert not analyst.is_active
    # (The source here does not provision; the targets are checked end to end in
    # tests/identity/scim/test_deactivation_end_to_end.py.)
    events = AuditEvent.objects.filter(actor=officer, action__in=["grant.revoked", "role.member_removed"])
    assert events.count() == 4 and all(e.reason == "Left the company" for e in events)
    summary = AuditEvent.objects.get(action="user.offboarded")
    assert summary.changes == {"is_active": [True, False]}


def test_offboarding_again_changes_nothing(leaver_world, analyst, officer):
    user_offboard(user=analyst, actor=officer, reason="Left")
    again = user_offboard(user=analyst, actor=officer, reason="Left (retry)")
    assert (again.grants_revoked, again.memberships_ended, again.deactivated) == ([], [], False)
    assert AuditEvent.objects.filter(reason="Left (retry)").count() == 0


def test_offboarding_an_account_already_switched_off_still_takes_what_it_holds(leaver_world, analyst, officer):
    type(analyst).objects.filter(pk=analyst.pk).update(is_active=False)  # e.g. in the admin
    result = user_offboard(user=analyst, actor=officer, reason="Left")
    assert len(result.grants_revoked) == 2 and len(result.memberships_ended) == 2 and not result.deactivated


def test_offboarding_refusals(analyst):
    with pytest.raises(InvalidInput):
        user_offboard(user=analyst, actor=None, reason=" ")
    with pytest.raises(NotPermitted):
        user_offboard(user=analyst, actor=analyst, reason="me")
    analyst.refresh_from_db()
    assert analyst.is_active
