"""Company sign-in with OpenID Connect (mozilla-django-oidc underneath; docs/identity.md).

config    the provider's endpoints (discovery, cached) and whether OIDC is on
claims    the ID token and userinfo claims, checked and normalised (hostile values refused or dropped)
services  the sign-in: the person found by (issuer, sub), created or updated, groups synced
backend   mozilla-django-oidc's backend: token exchange, RS256 against the JWKS, iss/aud checks
views     the redirect to the provider, the callback, and the portal's code when the IdP asserted no MFA
models    OidcIdentity (issuer + sub -> user) and the device that stands for the IdP's MFA
"""
