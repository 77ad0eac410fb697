"""Named access roles (analyst, pipeline service account...) with time-bounded members."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .history import governed


class RoleKind(models.TextChoices):
    HUMAN = "human", "People"
    SERVICE = "service", "Service accounts"


@governed()
class Role(models.Model):
    """A named bundle of access. Access requests may name a role as grantee; its members then hold it."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=RoleKind.choices, default=RoleKind.HUMAN)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_roles"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MembershipSource(models.TextChoices):
    """Who manages a membership. A sync (OIDC sign-in, SCIM) adds and removes only its own rows, so a
    membership an admin added is never taken away by the identity provider, nor the reverse."""

    ADMIN = "admin", "Added in the portal"
    REQUEST = "request", "Portal request"
    OIDC = "oidc", "OIDC sign-in"
    SCIM = "scim", "SCIM"


class RoleMembershipQuerySet(models.QuerySet["RoleMembership"]):
    def active(self, at: object | None = None) -> RoleMembershipQuerySet:
        now = at or timezone.now()
        return self.filter(Q(starts_at__lte=now), Q(ends_at__isnull=True) | Q(ends_at__gt=now), removed_at__isnull=True)


@governed()
class RoleMembership(models.Model):
    """A user's membership of a role, bounded in time; ended memberships stay as history."""

    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="role_memberships")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    managed_by = models.CharField(max_length=16, choices=MembershipSource.choices, default=MembershipSource.ADMIN)

    objects = RoleMembershipQuerySet.as_manager()

    class Meta:
        ordering = ["role", "user", "-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="role_membership_ends_after_start",
            ),
            # At most one open membership per (role, user): history rows are closed ones.
            models.UniqueConstraint(
                fields=["role", "user"], condition=Q(removed_at__isnull=True), name="role_membership_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.role}"
