"""Fixtures of the policy-as-code tests: the real target database of the provisioning tests (the
standing grants are provisioned and revoked on it by a real worker), and API clients with tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.provisioning.conftest import target_dbname, target_source  # noqa: F401 - the real target


@pytest.fixture
def api() -> Any:
    """`api(user, scopes)`: an API client with a token of `user` holding `scopes`."""
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_create

    def make(user: Any, scopes: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, scopes=scopes, name='ci').secret}")
        return client

    return make
