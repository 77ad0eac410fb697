"""The one sync from an identity provider's groups to Role memberships and portal duties: it gives
what the mappings say, takes away only what its own source gave, and records who did it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from accounts.roles import AUDITORS, GOVERNANCE_ADMINS, SECURITY_OFFICERS
from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import MembershipSource, RoleMembership
from governance.services.roles import role_create, role_member_add
from identity.models import GroupMapping, ManagedGroupMembership
from identity.services.mappings import mapping_create, mapping_delete
from identity.services.sync import memberships_sync

OIDC, SCIM = MembershipSource.OIDC, MembershipSource.SCIM


@pytest.fixture
def finance(gov_admin):
    role = role_create(actor=gov_admin, name="Finance analysts")
    mapping_create(actor=gov_admin, idp_group="fin-analysts", role=role)
    return role


@pytest.fixture
def officers_duty(gov_admin):
    group = Group.objects.get(name=SECURITY_OFFICERS)
    mapping_create(actor=gov_admin, idp_group="SecOps", portal_group=group)
    return group


def _open(user):
    return {
        (m.role.slug, m.managed_by) for m in RoleMembership.objects.active().filter(user=user).select_related("role")
    }


def test_a_mapped_group_gives_the_role_and_losing_it_takes_the_role_away(analyst, finance):
    result = memberships_sync(user=analyst, groups=["FIN-Analysts ", "unmapped"], source=OIDC)
    assert result.roles_added == [finance.slug]
    assert _open(analyst) == {(finance.slug, "oidc")}
    event = AuditEvent.objects.filter(action="role.member_added").latest("id")
    assert event.actor_id is None and event.metadata["managed_by"] == "oidc"

    # The same groups again: nothing changes, nothing is recorded.
    before = AuditEvent.objects.count()
    assert not memberships_sync(user=analyst, groups=["fin-analysts"], source=OIDC).changed
    assert AuditEvent.objects.count() == before

    result = memberships_sync(user=analyst, groups=[], source=OIDC)
    assert result.roles_removed == [finance.slug]
    assert _open(analyst) == set()
    closed = RoleMembership.objects.get(user=analyst, role=finance)
    assert closed.removed_at is not None
    synced = AuditEvent.objects.filter(action="identity.groups_synced").latest("id")
    assert synced.metadata["roles_removed"] == [finance.slug] and synced.target_id == str(analyst.pk)


def test_a_sync_never_takes_away_what_an_admin_or_the_other_source_gave(gov_admin, analyst, finance):
    role_member_add(role=finance, user=analyst, actor=gov_admin)
    # The group says the same: the admin's membership is kept as it is, not adopted.
    assert not memberships_sync(user=analyst, groups=["fin-analysts"], source=OIDC).changed
    assert _open(analyst) == {(finance.slug, "admin")}
    # And the group gone does not remove it.
    assert not memberships_sync(user=analyst, groups=[], source=OIDC).changed
    assert _open(analyst) == {(finance.slug, "admin")}

    other = role_create(actor=gov_admin, name="Other")
    mapping_create(actor=gov_admin, idp_group="other", role=other)
    memberships_sync(user=analyst, groups=["other"], source=SCIM)
    assert not memberships_sync(user=analyst, groups=[], source=OIDC).changed
    assert (other.slug, "scim") in _open(analyst)


def test_a_mapped_duty_is_given_and_taken_back_but_a_duty_held_before_is_kept(make_user, officers_duty):
    person = make_user("person")
    memberships_sync(user=person, groups=["secops"], source=OIDC)
    assert person.groups.filter(name=SECURITY_OFFICERS).exists()
    assert ManagedGroupMembership.objects.get(user=person).managed_by == "oidc"
    result = memberships_sync(user=person, groups=[], source=OIDC)
    assert result.duties_removed == [SECURITY_OFFICERS]
    assert not person.groups.filter(name=SECURITY_OFFICERS).exists()

    veteran = make_user("veteran", SECURITY_OFFICERS)  # made an officer in the portal
    assert not memberships_sync(user=veteran, groups=["secops"], source=OIDC).changed
    memberships_sync(user=veteran, groups=[], source=OIDC)
    assert veteran.groups.filter(name=SECURITY_OFFICERS).exists()


def test_hostile_group_claims_are_ignored_not_fatal(analyst, finance):
    claims = [None, 42, {"name": "fin-analysts"}, ["fin-analysts"], "", "   ", "x" * 10_000]
    assert not memberships_sync(user=analyst, groups=claims, source=OIDC).changed
    assert _open(analyst) == set()


def test_only_the_sync_sources_may_sync(analyst):
    with pytest.raises(ValueError, match="does not sync"):
        memberships_sync(user=analyst, groups=[], source=MembershipSource.ADMIN)


def test_mappings_are_for_governance_admins_and_refusals_are_audited(analyst, gov_admin, finance):
    with pytest.raises(NotPermitted):
        mapping_create(actor=analyst, idp_group="anything", role=finance)
    denied = AuditEvent.objects.filter(action="identity.mapping_create").latest("id")
    assert denied.outcome == "denied" and denied.actor_id == analyst.pk
    with pytest.raises(ConflictError):
        mapping_create(actor=gov_admin, idp_group="FIN-ANALYSTS", role=finance)
    with pytest.raises(InvalidInput) as both:
        mapping_create(actor=gov_admin, idp_group="x", role=finance, portal_group=Group.objects.get(name=AUDITORS))
    assert both.value.field == "role"
    with pytest.raises(InvalidInput) as blank:
        mapping_create(actor=gov_admin, idp_group="  ", role=finance)
    assert blank.value.field == "idp_group"
    with pytest.raises(InvalidInput) as foreign:
        mapping_create(actor=gov_admin, idp_group="x", portal_group=Group.objects.create(name="Not a duty"))
    assert foreign.value.field == "portal_group"
    assert GroupMapping.objects.count() == 1


def test_a_deleted_mapping_stops_giving_at_the_next_sync(gov_admin, analyst, finance):
    memberships_sync(user=analyst, groups=["fin-analysts"], source=OIDC)
    mapping_delete(actor=gov_admin, mapping=GroupMapping.objects.get())
    assert _open(analyst) == {(finance.slug, "oidc")}  # until the next sync
    memberships_sync(user=analyst, groups=["fin-analysts"], source=OIDC)
    assert _open(analyst) == set()
    assert AuditEvent.objects.filter(action="identity.mapping_deleted", actor=gov_admin).exists()


def test_governance_admin_duty_can_be_mapped(make_user, gov_admin):
    mapping_create(actor=gov_admin, idp_group="gov", portal_group=Group.objects.get(name=GOVERNANCE_ADMINS))
    person = make_user("p2")
    memberships_sync(user=person, groups=["gov"], source=SCIM)
    assert person.groups.filter(name=GOVERNANCE_ADMINS).exists()


def test_a_duty_the_other_source_gave_is_left_to_it(make_user, officers_duty):
    person = make_user("person")
    memberships_sync(user=person, groups=["secops"], source=SCIM)
    assert not memberships_sync(user=person, groups=[], source=OIDC).changed
    assert person.groups.filter(name=SECURITY_OFFICERS).exists()
    assert memberships_sync(user=person, groups=[], source=SCIM).duties_removed == [SECURITY_OFFICERS]


def test_the_sync_removal_service_refuses_a_membership_it_does_not_manage(gov_admin, analyst, finance):
    from governance.services.roles import role_member_sync_remove

    membership = role_member_add(role=finance, user=analyst, actor=gov_admin)
    assert role_member_sync_remove(membership=membership, managed_by=OIDC) is False
    assert _open(analyst) == {(finance.slug, "admin")}


def test_my_grants_shows_each_role_and_who_manages_it(client, gov_admin, analyst, finance):
    from django.test import Client

    memberships_sync(user=analyst, groups=["fin-analysts"], source=OIDC)
    manual = role_create(actor=gov_admin, name="Manual role")
    role_member_add(role=manual, user=analyst, actor=gov_admin)
    page = Client()
    page.force_login(analyst)
    body = page.get("/portal/grants/").content.decode()
    assert "Your roles" in body
    assert "<td>Finance analysts</td><td>OIDC sign-in</td>" in body
    assert "<td>Manual role</td><td>Added in the portal</td>" in body


def test_a_governance_admin_maps_a_group_in_the_admin_and_a_requester_cannot(gov_admin, analyst, finance):
    from django.test import Client

    admin = Client()
    admin.force_login(gov_admin)
    assert admin.get("/admin/identity/groupmapping/").status_code == 200
    response = admin.post("/admin/identity/groupmapping/add/", {"idp_group": "data-eng", "role": finance.pk})
    assert response.status_code == 302
    assert GroupMapping.objects.filter(idp_group="data-eng", created_by=gov_admin).exists()
    assert AuditEvent.objects.filter(action="identity.mapping_created", actor=gov_admin).count() == 2
    requester = Client()
    requester.force_login(analyst)
    assert requester.get("/admin/identity/groupmapping/").status_code in (302, 403)
