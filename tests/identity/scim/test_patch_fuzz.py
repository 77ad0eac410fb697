"""Whatever a provider sends as PATCH operations, the answer is a SCIM response, never a 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.identity.scim.conftest import GROUP, new_user

pytestmark = pytest.mark.django_db

PATHS = st.sampled_from(
    [
        "active", "ACTIVE", "userName", "name.givenName", "name", "emails", 'emails[type eq "work"].value',
        'emails[type co "w"]', "emails[", "members", 'members[value eq "1"]', "displayName", "externalId", "id",
        "groups", "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName", "title", "", "a.b.c", "[]",
    ]
)  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.sampled_from(["True", "false"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(PATHS, st.sampled_from(["value", "type", "primary"])), inner, max_size=3),
    ),
    max_leaves=6,
)
OPERATIONS = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "Replace", "remove", "bogus", 3])},
        optional={"path": st.one_of(PATHS, SCALARS), "value": VALUES},
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS, kind=st.sampled_from(["Users", "Groups"]))
def test_any_patch_is_answered_without_a_server_error(scim, operations, kind):
    if not hasattr(scim, "ids"):
        user = new_user(scim, "fuzzed")
        group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "fuzz", "members": [{"value": user["id"]}]})
        scim.ids = {"Users": user["id"], "Groups": group.json_body["id"]}
    response = scim.patch(f"/{kind}/{scim.ids[kind]}", *operations)
    assert response.status_code in (200, 400, 404, 409), response.content
    if response.status_code != 200:
        assert response.json_body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
