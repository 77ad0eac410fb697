"""The identity provider's groups and what they give in the portal."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from governance.models import MembershipSource

from .oidc.models import IdentityProviderDevice, OidcIdentity

__all__ = ["GroupMapping", "IdentityProviderDevice", "ManagedGroupMembership", "OidcIdentity"]


class GroupMapping(models.Model):
    """One IdP group (matched without regard to case) gives either membership of a portal Role (its
    grants reach the targets through the engine) or one of the portal's duties (a Django group:
    security officers, governance admins, auditors)."""

    idp_group = models.CharField(max_length=255, help_text="The group's name as the provider sends it.")
    role = models.ForeignKey(
        "governance.Role", null=True, blank=True, on_delete=models.PROTECT, related_name="idp_mappings"
    )
    portal_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="idp_mappings"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["idp_group"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(role__isnull=False) & Q(portal_group__isnull=True))
                | (Q(role__isnull=True) & Q(portal_group__isnull=False)),
                name="group_mapping_gives_one_thing",
            ),
            models.UniqueConstraint(Lower("idp_group"), "role", name="group_mapping_one_per_role"),
            models.UniqueConstraint(Lower("idp_group"), "portal_group", name="group_mapping_one_per_duty"),
        ]

    def __str__(self) -> str:
        return f"{self.idp_group} -> {self.role or self.portal_group}"


SYNC_SOURCES = [
    (MembershipSource.OIDC.value, MembershipSource.OIDC.label),
    (MembershipSource.SCIM.value, MembershipSource.SCIM.label),
]


class ManagedGroupMembership(models.Model):
    """A portal duty a person holds because a sync gave it. Django keeps the membership itself
    (user.groups); this row says who manages it, so a sync takes away only what it gave."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="managed_duties")
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="+")
    managed_by = models.CharField(max_length=16, choices=SYNC_SOURCES)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "group"], name="managed_duty_one_per_group")]

    def __str__(self) -> str:
        return f"{self.user} in {self.group} ({self.managed_by})"
