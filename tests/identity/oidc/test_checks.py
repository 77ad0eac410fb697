"""`manage.py check` fails fast on half an OIDC configuration; `check --deploy` warns on plain HTTP."""

from __future__ import annotations

from typing import Any

from identity.oidc.checks import oidc_over_https, oidc_settings


def configure(settings: Any, **values: Any) -> None:
    for name in ("OIDC_RP_CLIENT_ID", "OIDC_RP_CLIENT_SECRET", "OIDC_OP_DISCOVERY_URL"):
        setattr(settings, name, values.get(name, ""))
    for name in ("OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT"):
        setattr(settings, name, "")
    settings.OIDC_OP_JWKS_ENDPOINT = values.get("OIDC_OP_JWKS_ENDPOINT", "")
    settings.OIDC_ENABLED = bool(values.get("enabled"))


def test_off_or_whole_is_quiet(settings: Any) -> None:
    configure(settings)
    assert oidc_settings() == [] and oidc_over_https() == []
    url = "https://idp.example.com/.well-known/openid-configuration"
    configure(settings, OIDC_RP_CLIENT_ID="c", OIDC_RP_CLIENT_SECRET="s", OIDC_OP_DISCOVERY_URL=url, enabled=True)
    assert oidc_settings() == [] and oidc_over_https() == []


def test_half_a_configuration_is_an_error(settings: Any) -> None:
    configure(settings, OIDC_RP_CLIENT_ID="portal")
    [error] = oidc_settings()
    assert error.id == "identity.E001" and "OIDC_RP_CLIENT_ID" in error.msg
    configure(settings, OIDC_OP_JWKS_ENDPOINT="https://idp.example.com/jwks")
    assert oidc_settings()[0].id == "identity.E001"
    url = "https://idp.example.com/.well-known/openid-configuration"
    configure(settings, OIDC_RP_CLIENT_ID="c", OIDC_OP_DISCOVERY_URL=url, enabled=True)
    assert "OIDC_RP_CLIENT_SECRET is empty" in oidc_settings()[0].msg


def test_plain_http_endpoints_are_a_deploy_warning(settings: Any) -> None:
    url = "http://idp.example.com/.well-known/openid-configuration"
    configure(settings, OIDC_RP_CLIENT_ID="c", OIDC_RP_CLIENT_SECRET="s", OIDC_OP_DISCOVERY_URL=url, enabled=True)
    [warning] = oidc_over_https()
    assert warning.id == "identity.W001" and "OIDC_OP_DISCOVERY_URL" in warning.msg
