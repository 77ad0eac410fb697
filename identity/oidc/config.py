"""Whether OIDC is on, and the provider's endpoints: from the settings, else its discovery document.

The discovery document is fetched at the first sign-in (never at start-up: a provider that is down
must not stop the portal, nor `manage.py check`) and kept in memory for DISCOVERY_TTL seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

DISCOVERY_TTL = 3600.0


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read or lacks an endpoint."""


@dataclass(frozen=True)
class Provider:
    issuer: str  # empty when configured by endpoints without a discovery URL: `iss` is then not compared
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


_cache: dict[str, tuple[float, Provider]] = {}
_lock = threading.Lock()


def enabled() -> bool:
    return bool(getattr(settings, "OIDC_ENABLED", False))


def provider_name() -> str:
    return str(getattr(settings, "OIDC_PROVIDER_NAME", "") or "your company account")


def _discover(url: str) -> Provider:
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        doc: Any = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"discovery document unreadable: {type(exc).__name__}") from exc
    if not isinstance(doc, dict):
        raise ProviderUnavailable("discovery document is not a JSON object")
    names = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    values = {name: doc.get(name) for name in names}
    missing = [name for name, value in values.items() if not isinstance(value, str) or not value]
    if missing:
        raise ProviderUnavailable(f"discovery document lacks {', '.join(missing)}")
    return Provider(**{name: str(value) for name, value in values.items()})


def provider() -> Provider:
    """The endpoints: each one set in the settings wins over the discovery document."""
    url = settings.OIDC_OP_DISCOVERY_URL
    found = Provider("", "", "", "", "")
    if url:
        with _lock:
            cached = _cache.get(url)
        if cached is None or cached[0] < time.monotonic():
            discovered = _discover(url)
            with _lock:
                _cache[url] = (time.monotonic() + DISCOVERY_TTL, discovered)
            found = discovered
        else:
            found = cached[1]
    return Provider(
        issuer=found.issuer,
        authorization_endpoint=settings.OIDC_OP_AUTHORIZATION_ENDPOINT or found.authorization_endpoint,
        token_endpoint=settings.OIDC_OP_TOKEN_ENDPOINT or found.token_endpoint,
        userinfo_endpoint=settings.OIDC_OP_USER_ENDPOINT or found.userinfo_endpoint,
        jwks_uri=settings.OIDC_OP_JWKS_ENDPOINT or found.jwks_uri,
    )
