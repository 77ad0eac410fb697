"""PATCH as Entra ID and Okta send it, and Groups whose members become Role memberships through the
group mappings (the one sync, source SCIM)."""

from __future__ import annotations

import pytest

from accounts.models import User
from audit.models import AuditEvent
from governance.models import MembershipSource, RoleMembership
from governance.services.roles import role_create, role_member_add
from identity.scim.models import ScimGroup
from identity.services.mappings import mapping_create
from tests.identity.scim.conftest import GROUP, ScimClient, new_user

pytestmark = pytest.mark.django_db


def test_entra_replace_without_path_with_string_boolean_and_dotted_keys(scim, idp_account):
    user = new_user(scim)
    response = scim.patch(
        f"/Users/{user['id']}",
        {"op": "Replace", "value": {"active": "False", "name.givenName": "Augusta", "DisplayName": "A. Ada"}},
    )
    assert response.status_code == 200, response.json_body
    assert response.json_body["active"] is False
    assert response.json_body["name"] == {"givenName": "Augusta", "familyName": "Lovelace"}
    assert response.json_body["displayName"] == "A. Ada"
    assert User.objects.get(pk=user["id"]).is_active is False
    assert AuditEvent.objects.get(action="user.offboarded").actor_id == idp_account.pk


def test_okta_replace_active_false_with_a_path_then_true_again(scim):
    user = new_user(scim)
    assert scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False}).status_code == 200
    assert not User.objects.get(pk=user["id"]).is_active
    again = scim.patch(f"/Users/{user['id']}", {"op": "REPLACE", "path": "ACTIVE", "value": "true"})
    assert again.json_body["active"] is True
    assert AuditEvent.objects.filter(action="scim.user_reactivated").count() == 1


def test_value_filter_paths_on_emails_and_urn_prefixed_attributes(scim):
    user = new_user(scim)
    uid = user["id"]
    scim.patch(f"/Users/{uid}", {"op": "replace", "path": 'emails[type eq "work"].value', "value": "ada@lovelace.org"})
    assert User.objects.get(pk=uid).email == "ada@lovelace.org"
    scim.patch(
        f"/Users/{uid}",
        {"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName", "value": "King"},
        # an attribute this server does not store (the enterprise extension): ignored, not refused
        {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
        {"op": "add", "path": "title", "value": "Countess"},
    )
    assert User.objects.get(pk=uid).last_name == "King"
    scim.patch(f"/Users/{uid}", {"op": "remove", "path": 'emails[type eq "work"]'})
    assert User.objects.get(pk=uid).email == ""


@pytest.mark.parametrize(
    ("operations", "scim_type"),
    [
        ([{"op": "explode", "path": "active", "value": True}], "invalidSyntax"),
        ([{"op": "remove"}], "noTarget"),
        ([{"op": "replace", "path": 'emails[type co "w"].value', "value": "x@y.z"}], "invalidFilter"),
        ([{"op": "replace", "path": "active[", "value": True}], "invalidPath"),
        ([{"op": "replace", "path": "id", "value": "7"}], "mutability"),
        ([{"op": "replace", "path": "active", "value": "nope"}], "invalidValue"),
        ([{"op": "replace", "value": "not an object"}], "invalidValue"),
        ([], "invalidSyntax"),
    ],
)
def test_bad_patches_are_400_scim_errors_and_change_nothing(scim, operations, scim_type):
    user = new_user(scim)
    response = scim.patch(f"/Users/{user['id']}", *operations)
    assert response.status_code == 400, response.json_body
    assert response.json_body["scimType"] == scim_type
    assert User.objects.get(pk=user["id"]).is_active


def test_patch_without_the_patchop_schema_is_400(scim):
    user = new_user(scim)
    response = scim.call("patch", f"/Users/{user['id']}", {"Operations": [{"op": "add", "path": "title"}]})
    assert response.status_code == 400 and response.json_body["scimType"] == "invalidSyntax"


@pytest.fixture
def analysts_role(gov_admin):
    role = role_create(actor=gov_admin, name="Analysts")
    mapping_create(actor=gov_admin, idp_group="Data-Analysts", role=role)
    return role


def held(user_id: int) -> set[str]:
    return {
        f"{m.role.slug}:{m.managed_by}"
        for m in RoleMembership.objects.filter(user_id=user_id, removed_at__isnull=True).select_related("role")
    }


def test_group_members_become_role_members_through_the_mapping(scim, analysts_role, idp_account):
    ada, bob = new_user(scim, "ada"), new_user(scim, "bob")
    created = scim.post(
        "/Groups", {"schemas": [GROUP], "displayName": "data-analysts", "members": [{"value": ada["id"]}]}
    )
    assert created.status_code == 201, created.json_body
    gid = created.json_body["id"]
    assert held(ada["id"]) == {"analysts:scim"}
    added = RoleMembership.objects.get(user_id=ada["id"])
    assert added.added_by_id == idp_account.pk

    # Okta: add a member; Entra ID: remove by a value filter in the path.
    scim.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": bob["id"]}]})
    assert held(bob["id"]) == {"analysts:scim"}
    scim.patch(f"/Groups/{gid}", {"op": "Remove", "path": f'members[value eq "{ada["id"]}"]'})
    assert held(ada["id"]) == set()
    assert scim.get(f"/Users/{ada['id']}").json_body.get("groups") is None
    assert scim.get(f"/Users/{bob['id']}").json_body["groups"][0]["display"] == "data-analysts"

    # A rename away from the mapped name takes the role away; back, gives it again.
    scim.patch(f"/Groups/{gid}", {"op": "replace", "value": {"displayName": "Former analysts"}})
    assert held(bob["id"]) == set()
    scim.put(f"/Groups/{gid}", {"schemas": [GROUP], "displayName": "Data-Analysts", "members": [{"value": bob["id"]}]})
    assert held(bob["id"]) == {"analysts:scim"}
    # Okta removes members with the list in `value`.
    scim.patch(f"/Groups/{gid}", {"op": "remove", "path": "members", "value": [{"value": bob["id"]}]})
    assert held(bob["id"]) == set()
    assert AuditEvent.objects.filter(action="scim.group_updated", actor=idp_account).count() == 5


def test_the_sync_leaves_a_membership_added_in_the_portal_alone(scim, analysts_role, gov_admin):
    ada = new_user(scim, "ada")
    role_member_add(role=analysts_role, user=User.objects.get(pk=ada["id"]), actor=gov_admin)
    group = scim.post(
        "/Groups", {"schemas": [GROUP], "displayName": "data-analysts", "members": [{"value": ada["id"]}]}
    )
    scim.delete(f"/Groups/{group.json_body['id']}")
    assert held(ada["id"]) == {f"analysts:{MembershipSource.ADMIN}"}


def test_group_errors(scim):
    scim.post("/Groups", {"schemas": [GROUP], "displayName": "Eng"})
    dup = scim.post("/Groups", {"schemas": [GROUP], "displayName": "ENG"})
    assert dup.status_code == 409 and dup.json_body["scimType"] == "uniqueness"
    unknown = scim.post("/Groups", {"schemas": [GROUP], "displayName": "Ops", "members": [{"value": "424242"}]})
    assert unknown.status_code == 400 and "424242" in unknown.json_body["detail"]
    assert scim.post("/Groups", {"schemas": [GROUP]}).json_body["scimType"] == "invalidValue"
    assert list(ScimGroup.objects.values_list("display_name", flat=True)) == ["Eng"]
    found = scim.get("/Groups?filter=displayName%20eq%20%22eng%22").json_body
    assert found["totalResults"] == 1


def test_delete_user_hides_it_and_leaves_its_groups(scim, analysts_role):
    ada = new_user(scim, "ada")
    group = scim.post(
        "/Groups", {"schemas": [GROUP], "displayName": "data-analysts", "members": [{"value": ada["id"]}]}
    )
    assert scim.delete(f"/Users/{ada['id']}").status_code == 204
    assert scim.get(f"/Users/{ada['id']}").status_code == 404
    assert scim.delete(f"/Users/{ada['id']}").status_code == 404
    assert "members" not in scim.get(f"/Groups/{group.json_body['id']}").json_body
    user = User.objects.get(pk=ada["id"])
    assert not user.is_active and held(user.pk) == set()


def test_search_endpoint(scim: ScimClient):
    new_user(scim, "ada")
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName eq "ada"',
        "attributes": ["userName"],
    }
    found = scim.post("/Users/.search", body).json_body
    assert found["totalResults"] == 1 and set(found["Resources"][0]) == {"schemas", "id", "userName"}


def test_required_attributes_cannot_be_removed(scim):
    user = new_user(scim)
    response = scim.patch(f"/Users/{user['id']}", {"op": "remove", "path": "active"})
    assert response.status_code == 400 and "required" in response.json_body["detail"]
    assert User.objects.get(pk=user["id"]).is_active
