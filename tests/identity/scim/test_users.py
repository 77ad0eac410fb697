"""SCIM Users: create, read, filter, page, replace, and the errors providers must get as SCIM bodies."""

from __future__ import annotations

import pytest

from accounts.models import User
from accounts.tokens import api_token_create
from audit.models import AuditEvent
from tests.identity.scim.conftest import USER, ScimClient, new_user

pytestmark = pytest.mark.django_db

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def test_no_token_is_401_and_a_token_without_the_scim_scope_is_403(db, analyst):
    assert ScimClient(None).get("/Users").status_code == 401
    other = api_token_create(user=analyst, scopes="read,admin", actor=analyst).secret
    response = ScimClient(other).get("/Users")
    assert response.status_code == 403
    assert response.json_body["schemas"] == [ERROR]
    assert AuditEvent.objects.filter(action="api_token.scope_denied").exists()


def test_a_scim_token_reaches_nothing_of_the_rest_api(scim_token, client):
    response = client.get("/api/v1/datasets/", HTTP_AUTHORIZATION=f"Bearer {scim_token}")
    assert response.status_code == 403


def test_create_then_get_and_filter_by_username_in_any_case(scim, idp_account):
    created = new_user(scim, externalId="00u1")
    assert created["id"] and created["userName"] == "ada" and created["active"] is True
    user = User.objects.get(pk=created["id"])
    assert (user.email, user.first_name, user.has_usable_password()) == ("ada@example.com", "Ada", False)
    event = AuditEvent.objects.get(action="scim.user_created")
    assert event.actor_id == idp_account.pk
    assert scim.get(f"/Users/{created['id']}").json_body["externalId"] == "00u1"
    found = scim.get("/Users?filter=userName%20eq%20%22ADA%22").json_body
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == created["id"]
    assert scim.get("/Users?filter=externalId%20eq%20%2200u1%22").json_body["totalResults"] == 1
    assert scim.get("/Users?filter=userName%20eq%20%22nobody%22").json_body["totalResults"] == 0


def test_paging_with_start_index_and_count(scim):
    ids = [new_user(scim, f"user{n}")["id"] for n in range(5)]
    page = scim.get("/Users?startIndex=2&count=2").json_body
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert [r["id"] for r in page["Resources"]] == ids[1:3]


def test_service_accounts_and_superusers_are_out_of_reach(scim, idp_account, superuser):
    listed = scim.get("/Users").json_body
    assert listed["totalResults"] == 0
    assert scim.get(f"/Users/{superuser.pk}").status_code == 404
    assert scim.get(f"/Users/{idp_account.pk}").status_code == 404


def test_duplicate_username_is_409_uniqueness(scim):
    new_user(scim, "grace")
    response = scim.post("/Users", {"schemas": [USER], "userName": "GRACE"})
    assert response.status_code == 409
    assert response.json_body["scimType"] == "uniqueness"
    assert response.json_body["schemas"] == [ERROR]


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ({"schemas": [USER]}, "invalidValue"),
        ({"schemas": [USER], "userName": "bad name!"}, "invalidValue"),
        ({"schemas": [USER], "userName": "x", "active": "maybe"}, "invalidValue"),
        ({"schemas": [USER], "userName": "x", "emails": [{"value": "not-an-email"}]}, "invalidValue"),
        ({"schemas": [USER], "userName": "x", "name": "Ada"}, "invalidValue"),
        ({"schemas": [USER], "userName": "x", "externalId": "a\x00b"}, "invalidValue"),
        (["not", "an", "object"], "invalidSyntax"),
    ],
)
def test_bad_input_is_a_400_scim_error_and_writes_nothing(scim, body, scim_type):
    response = scim.post("/Users", body)
    assert response.status_code == 400, response.json_body
    assert response.json_body["scimType"] == scim_type
    assert response.json_body["status"] == "400"
    assert not User.objects.filter(is_service_account=False).exists()


def test_malformed_json_and_unknown_filters_are_400(scim):
    assert scim.post("/Users", raw="{not json").json_body["scimType"] == "invalidSyntax"
    response = scim.get("/Users?filter=name.givenName%20co%20%22a%22")
    assert response.status_code == 400 and response.json_body["scimType"] == "invalidFilter"
    assert scim.get("/Users?count=many").status_code == 400
    assert scim.get("/Users?filter=userName%20eq%20%22a%5Cu0000b%22").json_body["scimType"] == "invalidFilter"


def test_unknown_ids_and_endpoints_are_404(scim):
    assert scim.get("/Users/999999").status_code == 404
    assert scim.get("/Users/not-a-number").status_code == 404
    assert scim.get("/Groups/not-a-uuid").status_code == 404
    assert scim.get("/Users/99999999999999999999999").status_code == 404  # beyond a bigint
    too_big = scim.get("/Users?filter=id%20eq%20%2299999999999999999999999%22").json_body
    assert too_big["totalResults"] == 0
    almost_uuid = scim.get("/Groups?filter=id%20eq%20%22zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz%22").json_body
    assert almost_uuid["totalResults"] == 0
    response = scim.get("/Nothing/here")
    assert response.status_code == 404 and response.json_body["schemas"] == [ERROR]


def test_put_replaces_and_clears_what_is_left_out(scim):
    created = new_user(scim, displayName="Ada L.")
    body = {"schemas": [USER], "userName": "ada.lovelace", "active": "True", "emails": []}
    replaced = scim.put(f"/Users/{created['id']}", body).json_body
    assert replaced["userName"] == "ada.lovelace"
    assert "displayName" not in replaced and "name" not in replaced and "emails" not in replaced
    assert User.objects.get(pk=created["id"]).email == ""


def test_discovery_documents(scim):
    spc = scim.get("/ServiceProviderConfig").json_body
    assert spc["patch"]["supported"] is True and spc["bulk"]["supported"] is False
    kinds = scim.get("/ResourceTypes").json_body
    assert {r["id"] for r in kinds["Resources"]} == {"User", "Group"}
    schema = scim.get(f"/Schemas/{USER}").json_body
    assert {a["name"] for a in schema["attributes"]} >= {"userName", "active", "emails"}


def test_list_query_count_does_not_grow_with_rows(scim, django_assert_num_queries):
    from tests.identity.scim.conftest import GROUP

    def world(size: int) -> None:
        ids = [new_user(scim, f"p{size}x{n}")["id"] for n in range(size)]
        scim.post("/Groups", {"schemas": [GROUP], "displayName": f"eng{size}", "members": [{"value": i} for i in ids]})

    for size in (1, 6):
        world(size)
        # the token, the count, the page, the groups (or members) of the page in one query
        with django_assert_num_queries(4):
            users = scim.get("/Users").json_body
        assert all(r["groups"][0]["display"].startswith("eng") for r in users["Resources"])
        with django_assert_num_queries(4):
            groups = scim.get("/Groups").json_body
        assert len(groups["Resources"][-1]["members"]) == size


def test_put_with_active_false_offboards(scim, idp_account):
    created = new_user(scim)
    body = {"schemas": [USER], "userName": "ada", "active": "False"}
    assert scim.put(f"/Users/{created['id']}", body).json_body["active"] is False
    assert not User.objects.get(pk=created["id"]).is_active
    assert AuditEvent.objects.get(action="user.offboarded").actor_id == idp_account.pk
    scim.put(f"/Users/{created['id']}", body)  # the provider sends it again: nothing more happens
    assert AuditEvent.objects.filter(action="user.offboarded").count() == 1
