"""The real OpenID provider (tests/oidc) for the session, and the portal's settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.oidc import OidcProvider

# The real target PostgreSQL with provisioning on, as the provisioning tests have it (the acceptance
# test proves the IdP group's privilege arrives there and leaves).
from tests.provisioning.conftest import target_dbname, target_source  # noqa: F401


@pytest.fixture(scope="session")
def oidc_provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """tests/oidc/provider.js on a free port, with the live server's callback as the client's only
    redirect URI. Stopped at the end of the session."""
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), f"{live_server.url}/oidc/callback/")
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def oidc_on(settings: Any) -> Any:
    """OIDC switched on with a provider that is never reached (tests that stop before the network)."""
    settings.OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID = "data-access-portal"
    settings.OIDC_RP_CLIENT_SECRET = "not-used"
    settings.OIDC_OP_DISCOVERY_URL = "http://127.0.0.1:9/.well-known/openid-configuration"
    settings.OIDC_PROVIDER_NAME = "Example IdP"
    return settings


@pytest.fixture
def oidc_settings(oidc_on: Any, oidc_provider: OidcProvider) -> OidcProvider:
    """The portal (this process and its live server) signs in through the session's provider."""
    oidc_on.OIDC_RP_CLIENT_ID = oidc_provider.client_id
    oidc_on.OIDC_RP_CLIENT_SECRET = oidc_provider.client_secret
    oidc_on.OIDC_OP_DISCOVERY_URL = oidc_provider.discovery_url
    oidc_on.OIDC_RP_SCOPES = "openid email profile groups"
    oidc_provider.set_accounts({})
    return oidc_provider


def sign_in_over_http(base: str, provider: OidcProvider, subject: str, password: str) -> tuple[Any, Any]:
    """The code flow without a browser, through the real provider: the portal's redirect, the
    provider's login form, its consent and the portal's callback. Returns the HTTP session (its
    cookies) and the last response (where the portal sent the person)."""
    import requests

    http = requests.Session()
    login_page = http.get(f"{base}/oidc/authenticate/?next=/portal/grants/", timeout=10)
    assert login_page.url.startswith(f"{provider.issuer}/interaction/"), login_page.url
    uid = login_page.url.rsplit("/", 1)[1]
    landed = http.post(
        f"{provider.issuer}/interaction/{uid}/login", data={"login": subject, "password": password}, timeout=10
    )
    return http, landed


def session_of(http: Any) -> Any:
    """The portal's server-side session behind a requests session's cookie."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    key = http.cookies.get(settings.SESSION_COOKIE_NAME)
    return SessionStore(session_key=key) if key else None
