"""mozilla-django-oidc's backend, made lazy, strict about the ID token, and writing through the service.

Django instantiates every authentication backend on every `authenticate()` (password sign-ins
too), so nothing here reads the network or the provider's settings until an OIDC callback asks.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from . import config
from .claims import SignInRefused, parse
from .services import oidc_user_sign_in


class PortalOIDCBackend(OIDCAuthenticationBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()
        self._issuer = ""

    def _configure(self) -> None:
        endpoints = config.provider()
        self._issuer = endpoints.issuer
        self.OIDC_OP_TOKEN_ENDPOINT = endpoints.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = endpoints.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = endpoints.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = "RS256"  # asymmetric only: the client secret never verifies a token
        self.OIDC_RP_IDP_SIGN_KEY = None  # the key comes from the JWKS, found by the token's kid

    def authenticate(self, request: Any, **kwargs: Any) -> Any:
        # Only the callback view passes the nonce and PKCE verifier it kept in the session.
        if request is None or not config.enabled() or "nonce" not in kwargs or "code_verifier" not in kwargs:
            return None
        self._configure()
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: str, **kwargs: Any) -> Any:
        """The signature (RS256, JWKS), expiry and nonce as mozilla-django-oidc checks them, plus what
        it leaves out: the token is for this client (aud, azp) from this provider (iss)."""
        payload = super().verify_token(token, **kwargs)
        if not isinstance(payload, dict):
            raise SuspiciousOperation("ID token payload is not an object")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token is for another client (aud)")
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("ID token's authorized party (azp) is another client")
        if self._issuer and payload.get("iss") != self._issuer:
            raise SuspiciousOperation("ID token is from another issuer (iss)")
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict):
            raise SuspiciousOperation("userinfo is not an object")
        try:
            claims = parse(id_token=payload, userinfo=userinfo)
            user, _ = oidc_user_sign_in(claims=claims)
        except SignInRefused as exc:
            self.request.oidc_refusal = exc.message
            return None
        self.request.oidc_mfa_asserted = claims.mfa
        return user
