"""System checks for the OIDC settings (run by `manage.py check`; the deploy ones by `check --deploy`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

ENDPOINTS = (
    "OIDC_OP_DISCOVERY_URL",
    "OIDC_OP_AUTHORIZATION_ENDPOINT",
    "OIDC_OP_TOKEN_ENDPOINT",
    "OIDC_OP_USER_ENDPOINT",
    "OIDC_OP_JWKS_ENDPOINT",
)


@register()
def oidc_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Half a configuration fails fast: a client id without a provider (or the reverse) would leave
    the button off and people wondering; a client without its secret fails at every sign-in."""
    configured = [name for name in ("OIDC_RP_CLIENT_ID", *ENDPOINTS) if getattr(settings, name, "")]
    if not configured or (settings.OIDC_ENABLED and settings.OIDC_RP_CLIENT_SECRET):
        return []
    if settings.OIDC_ENABLED:
        problem = "OIDC_RP_CLIENT_SECRET is empty"
    else:
        problem = f"only {', '.join(configured)} of the OIDC settings are set"
    return [
        Error(
            f"OIDC sign-in is half configured: {problem}.",
            hint="Set OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET and OIDC_OP_DISCOVERY_URL (docs/identity.md).",
            id="identity.E001",
        )
    ]


@register(deploy=True)
def oidc_over_https(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Codes, tokens and the client secret travel to these endpoints."""
    plain = [name for name in ENDPOINTS if urlsplit(getattr(settings, name, "") or "https://").scheme != "https"]
    if not settings.OIDC_ENABLED or not plain:
        return []
    return [
        Warning(
            f"OIDC endpoints without HTTPS: {', '.join(plain)}.",
            hint="The provider's endpoints must be https:// in production.",
            id="identity.W001",
        )
    ]
