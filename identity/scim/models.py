"""What the identity provider told us through SCIM beyond the User row itself."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class ScimUser(models.Model):
    """The SCIM side of a portal user: the provider's externalId and the attributes the User model
    has no column for. A user created in the portal gets one the first time SCIM writes to it.
    `deleted_at`: the provider DELETEd the user; the account is offboarded and kept (grants and the
    audit trail point at it), and SCIM answers 404 for it from then on (RFC 7644 §3.6)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="scim")
    external_id = models.CharField(max_length=255, blank=True)
    display_name = models.CharField(max_length=255, blank=True)
    emails = models.JSONField(default=list, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SCIM user"

    def __str__(self) -> str:
        return f"SCIM {self.user}"


class ScimGroup(models.Model):
    """A group of the identity provider as SCIM pushes it. Its name is what the group mappings
    match (without regard to case); its members are portal users."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ScimGroupMember", related_name="scim_groups", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "SCIM group"
        constraints = [models.UniqueConstraint(Lower("display_name"), name="scim_group_name_unique")]

    def __str__(self) -> str:
        return self.display_name


class ScimGroupMember(models.Model):
    group = models.ForeignKey(ScimGroup, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scim_group_memberships")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "user"], name="scim_group_member_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.group}"
