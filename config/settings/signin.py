"""Sign-in: the second factor, sessions, lockouts, and company sign-in with OpenID Connect
(config/settings/base.py imports it; every variable is documented in `.env.example`)."""

import datetime as dt

from .environment import env

# --- Sign-in ------------------------------------------------------------------------------------
# The second factor (accounts.mfa) for the admin site, for deciding Confidential/Restricted
# requests and for revealing temporary database passwords.
MFA_REQUIRED = env.bool("MFA_REQUIRED", default=True)
# A session lasts a working day at most, then asks for the password (and code) again.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE_SECONDS", default=8 * 3600)
# django-axes: the AXES_FAILURE_LIMIT-th wrong password in a row locks the username (not the IP:
# shared NATs) for AXES_COOLOFF_MINUTES; a success resets the count. Every failure is audited.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=4)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# axes.W006 wants the IP in the lockout key too; a whole office behind one NAT address would then
# be locked out by one person's typos. The username is what an attacker must keep constant.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]

# --- Company sign-in: OpenID Connect (identity/oidc/, docs/identity.md) ------------------------
# On when a client id and the provider (its discovery URL, or all four endpoints) are configured.
# Authorization code flow with PKCE; ID tokens signed with RS256 and checked against the provider's
# JWKS. Endpoints not given are read from the discovery document at the first sign-in.
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET", default="")
OIDC_OP_DISCOVERY_URL = env.str("OIDC_OP_DISCOVERY_URL", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_ENABLED = bool(
    OIDC_RP_CLIENT_ID
    and (
        OIDC_OP_DISCOVERY_URL
        or (
            OIDC_OP_AUTHORIZATION_ENDPOINT
            and OIDC_OP_TOKEN_ENDPOINT
            and OIDC_OP_USER_ENDPOINT
            and OIDC_OP_JWKS_ENDPOINT
        )
    )
)
# The button on the login page: "Sign in with <OIDC_PROVIDER_NAME>".
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="your company account")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env.int("OIDC_TIMEOUT_SECONDS", default=10)
# The claim that lists the person's groups (Entra ID: "groups" or "roles"; Keycloak: the mapper's name).
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
# A first sign-in adopts the account SCIM created for the person when this ID-token claim equals the
# SCIM user's externalId (Okta: "sub", its user id; Entra ID: "oid" with externalId mapped to
# objectId). Empty: never (accounts are then linked with `manage.py oidc_link`).
OIDC_SCIM_MATCH_CLAIM = env.str("OIDC_SCIM_MATCH_CLAIM", default="sub")
# The provider asserts a second factor with one of these `amr` values, or an `acr` in OIDC_MFA_ACR_VALUES;
# then the portal does not ask for its own.
OIDC_MFA_AMR_VALUES = env.list("OIDC_MFA_AMR_VALUES", default=["mfa", "otp", "hwk", "swk", "sms", "fido", "sc"])
OIDC_MFA_ACR_VALUES = env.list("OIDC_MFA_ACR_VALUES", default=[])
# With OIDC on and this list set, only these usernames may still sign in with a local password
# (break-glass admins); everyone else signs in through the provider.
LOCAL_LOGIN_ALLOWED_USERS = env.list("LOCAL_LOGIN_ALLOWED_USERS", default=[])
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
OIDC_CALLBACK_CLASS = "identity.oidc.views.PortalOIDCCallbackView"
OIDC_AUTHENTICATE_CLASS = "identity.oidc.views.PortalOIDCAuthenticationRequestView"
LOGIN_REDIRECT_URL_FAILURE = "login"
