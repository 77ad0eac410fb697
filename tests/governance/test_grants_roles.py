"""Revoking grants and managing role members, with their audit events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import AccessRequest, Grant, GrantStatus, RequestState, RoleMembership
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add, role_member_remove

pytestmark = pytest.mark.django_db
DAYS = dt.timedelta(days=1)


@pytest.fixture
def grant(analyst, owner, make_dataset) -> Grant:
    ds = make_dataset("orders", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, duration=7 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def test_owner_revokes_grant_never_deleted(grant, owner):
    grant_revoke(grant=grant, actor=owner, reason="project finished")
    grant.refresh_from_db()
    assert grant.status == GrantStatus.REVOKED and grant.revoked_by == owner
    assert not Grant.objects.active().filter(pk=grant.pk).exists()
    assert Grant.objects.filter(pk=grant.pk).exists()
    event = AuditEvent.objects.get(action="grant.revoked")
    assert event.reason == "project finished" and event.actor == owner


def test_revoke_refusals(grant, owner, other_owner):
    with pytest.raises(NotPermitted):
        grant_revoke(grant=grant, actor=other_owner, reason="x")
    with pytest.raises(InvalidInput, match="Say why"):
        grant_revoke(grant=grant, actor=owner, reason="")
    grant_revoke(grant=grant, actor=owner, reason="done")
    with pytest.raises(ConflictError, match="already revoked"):
        grant_revoke(grant=grant, actor=owner, reason="again")
    assert AuditEvent.objects.filter(action="grant.revoke", outcome="denied").count() == 3


def test_grantee_can_relinquish(grant, analyst):
    grant_revoke(grant=grant, actor=analyst, reason="no longer needed")
    grant.refresh_from_db()
    assert grant.revoked_by == analyst


def test_active_is_defined_by_time(grant):
    assert Grant.objects.active().count() == 1
    assert Grant.objects.active(at=timezone.now() + 8 * DAYS).count() == 0
    assert Grant.objects.active(at=grant.starts_at - DAYS).count() == 0


def test_role_request_needs_membership_and_owner_stage(gov_admin, analyst, owner, make_user, make_dataset):
    outsider = make_user("outsider")
    ds = make_dataset("campaigns", classification="public", owner=owner)
    role = role_create(actor=gov_admin, name="Marketing analysts", kind="human")
    with pytest.raises(NotPermitted, match="owner or a member"):
        access_request_submit(requester=outsider, dataset=ds, duration=DAYS, grantee_role=role)
    role_member_add(role=role, user=analyst, actor=gov_admin, ends_at=timezone.now() + 30 * DAYS)
    req = access_request_submit(requester=analyst, dataset=ds, duration=DAYS, grantee_role=role)
    # Public auto-approves for a person, but access for a role reaches every member.
    assert req.state == RequestState.PENDING and req.required_stages == ["owner"]
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    assert grant.grantee_role == role and grant.grantee_user is None
    assert AccessRequest.objects.get(pk=req.pk).grantee_display == "role Marketing analysts"


def test_role_membership_lifecycle(gov_admin, analyst):
    role = role_create(actor=gov_admin, name="Data scientists")
    membership = role_member_add(role=role, user=analyst, actor=gov_admin)
    with pytest.raises(ConflictError, match="already a member"):
        role_member_add(role=role, user=analyst, actor=gov_admin)
    assert RoleMembership.objects.active().count() == 1
    role_member_remove(membership=membership, actor=gov_admin, reason="moved team")
    assert RoleMembership.objects.active().count() == 0
    # History is kept and a new membership may start.
    role_member_add(role=role, user=analyst, actor=gov_admin)
    assert RoleMembership.objects.count() == 2
    actions = [e.action for e in AuditEvent.objects.order_by("id") if e.outcome == "success"]
    assert actions == ["role.created", "role.member_added", "role.member_removed", "role.member_added"]


def test_membership_must_end_in_future(gov_admin, analyst):
    role = role_create(actor=gov_admin, name="Temp")
    with pytest.raises(InvalidInput, match="future"):
        role_member_add(role=role, user=analyst, actor=gov_admin, ends_at=timezone.now() - DAYS)


def test_role_member_or_owner_cannot_approve_access_for_the_role(gov_admin, analyst, owner, make_user, make_dataset):
    """Access for a role reaches its members and its owner: neither may decide it."""
    ds = make_dataset("ledger", classification="confidential", owner=owner)
    role = role_create(actor=gov_admin, name="Finance", owner=None)
    role_member_add(role=role, user=analyst, actor=gov_admin)
    role_member_add(role=role, user=owner, actor=gov_admin)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=DAYS, grantee_role=role)
    with pytest.raises(NotPermitted, match="role this access is for"):
        access_request_approve(access_request=req, approver=owner)
    from governance.selectors.requests import access_requests_awaiting

    assert not access_requests_awaiting(owner).filter(pk=req.pk).exists()

    role_owner = make_user("role_owner")
    owned = role_create(actor=gov_admin, name="Owned", owner=role_owner)
    from guardian.shortcuts import assign_perm

    assign_perm("approve_access", role_owner, ds)
    role_member_add(role=owned, user=analyst, actor=gov_admin)
    req2 = access_request_submit(requester=analyst, dataset=ds, justification="x", duration=DAYS, grantee_role=owned)
    with pytest.raises(NotPermitted, match="role this access is for"):
        access_request_approve(access_request=req2, approver=role_owner)


def test_only_governance_admins_add_members_and_never_themselves(gov_admin, analyst, make_user):
    role_owner = make_user("role_owner")
    role = role_create(actor=gov_admin, name="Pipelines", owner=role_owner)
    with pytest.raises(NotPermitted, match="Only governance admins"):
        role_member_add(role=role, user=role_owner, actor=role_owner)
    with pytest.raises(NotPermitted, match="yourself"):
        role_member_add(role=role, user=gov_admin, actor=gov_admin)
    assert not RoleMembership.objects.exists()
    assert AuditEvent.objects.filter(action="role.member_add", outcome="denied").count() == 2
