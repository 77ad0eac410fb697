"""Who a person is at the identity provider, and the IdP's second factor as a django-otp device."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django_otp.models import Device


class OidcIdentity(models.Model):
    """The provider's stable key for a person (issuer + `sub`). Sign-in finds the portal account by
    this and nothing else: an email or username claim never picks an existing account, so a
    provider account cannot take over a local one by claiming its address."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OIDC identity"
        verbose_name_plural = "OIDC identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_one_per_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class IdentityProviderDevice(Device):
    """Stands for "the identity provider verified a second factor at this sign-in" (its `amr`/`acr`).

    django-otp counts a session as verified when it holds a confirmed device of the user; this one
    is put in the session only by an OIDC sign-in whose ID token asserts MFA. It accepts no code
    (verify_token is Device's: always False) and does not count as the person's own authenticator
    (`counts_as_enrolled`, read by accounts.mfa.has_device)."""

    counts_as_enrolled = False

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        verbose_name = "identity provider MFA"
