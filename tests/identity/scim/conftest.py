"""A SCIM client as an identity provider is one: a service account's API token with the `scim` scope."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from accounts.tokens import api_token_create
from tests.provisioning.conftest import target_dbname, target_source  # noqa: F401 - the real target, for end to end

SCIM = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


class ScimClient:
    """Django's test client speaking SCIM: JSON bodies, the bearer token on every call."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None, raw: str | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        response = getattr(self.client, method)(f"/scim/v2{path}", data=data, content_type=SCIM, **self.headers)
        response.json_body = json.loads(response.content) if response.content else None
        return response

    def get(self, path: str) -> Any:
        return self.call("get", path)

    def post(self, path: str, body: Any = None, raw: str | None = None) -> Any:
        return self.call("post", path, body, raw)

    def put(self, path: str, body: Any) -> Any:
        return self.call("put", path, body)

    def patch(self, path: str, *operations: dict[str, Any], raw: str | None = None) -> Any:
        return self.call("patch", path, {"schemas": [PATCH_OP], "Operations": list(operations)}, raw)

    def delete(self, path: str) -> Any:
        return self.call("delete", path)


@pytest.fixture
def idp_account(db: Any) -> User:
    return User.objects.create_user(username="okta-scim", is_service_account=True)


@pytest.fixture
def scim_token(idp_account: User) -> str:
    return api_token_create(user=idp_account, scopes="scim", name="Okta SCIM", actor=idp_account).secret


@pytest.fixture
def scim(scim_token: str) -> ScimClient:
    return ScimClient(scim_token)


def new_user(scim: ScimClient, username: str = "ada", **extra: Any) -> dict[str, Any]:
    body = {
        "schemas": [USER],
        "userName": username,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": f"{username}@example.com", "type": "work", "primary": True}],
        "active": True,
        **extra,
    }
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.json_body
    return response.json_body
