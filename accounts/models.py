from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person or a service account.

    Portal-wide duties (security officer, governance admin, auditor) are Django groups, see
    `accounts.roles`. Per-dataset duties (owner, steward) are object permissions on the dataset.
    """

    is_service_account = models.BooleanField(
        default=False, help_text="A pipeline or tool rather than a person; it cannot sign in to the admin."
    )

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username


class Team(models.Model):
    """A group of people who own data together or request access together (e.g. "Finance analytics")."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(User, through="TeamMembership", related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="team_memberships")
    is_lead = models.BooleanField(default=False)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class TokenScope(models.TextChoices):
    """What an API token may do. Scopes are independent: a pipeline that files and then reads its
    requests needs `read` and `request`. The user's own rights still apply on top of the scope."""

    READ = "read", "Read (every GET)"
    REQUEST = "request", "Request access (create and cancel requests)"
    APPROVE = "approve", "Approve (approve or deny requests, revoke grants, confirm or reject column tags)"
    ADMIN = "admin", "Administer (sources, roles, provisioning retries, reconcile)"
    # An identity provider's SCIM client: it may call /scim/v2/ and nothing else (and no other
    # scope reaches /scim/v2/), because it creates, changes and offboards people.
    SCIM = "scim", "SCIM provisioning (an identity provider creates, updates and deactivates people)"
    # Policy as code (docs/policy-as-code.md): a CI pipeline exports and plans with `policy:read`
    # and applies with `policy:apply`; no other scope reaches /api/v1/policy/, nor these any other route.
    POLICY_READ = "policy:read", "Policy as code: export and plan"
    POLICY_APPLY = "policy:apply", "Policy as code: apply a document"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        """The one definition of a token that authenticates: not revoked, not expired."""
        from django.utils import timezone

        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class ApiToken(models.Model):
    """A scoped, expiring, revocable credential for the REST API.

    The token (``gov_<key_id>_<secret>``) is shown once, when it is created; only the SHA-256 of it
    is stored (the secret has 256 bits of entropy, so a fast hash is enough and a stolen table gives
    nothing usable). ``key_id`` is public: it finds the row and names the token in logs and the
    audit trail. Every token expires; ``last_used_at`` is refreshed at most once a minute.
    """

    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'nightly ETL'.")
    key_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, help_text="SHA-256 (hex) of the whole token.")
    scopes = models.JSONField(default=list, help_text="Subset of read, request, approve, admin.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_id} ({self.name}) of {self.user.username}"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
