"""The OIDC sign-in's writes: the account found by (issuer, sub), created or updated from the claims,
and its memberships synced from the groups claim, in one transaction with their audit events."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import MembershipSource
from governance.services.common import refusal_recorded

from ..services.sync import SyncResult, memberships_sync
from .claims import Claims, SignInRefused, username_candidates
from .models import OidcIdentity

PROFILE_FIELDS = ("email", "first_name", "last_name")


def _new_username(claims: Claims) -> str:
    User = get_user_model()
    for candidate in username_candidates(claims):
        if not User.objects.filter(username__iexact=candidate).exists():
            return candidate
    raise SignInRefused("No free username could be made for this account.")  # 2**256 collisions


def _create(claims: Claims) -> Any:
    User = get_user_model()
    if claims.email and User.objects.filter(email__iexact=claims.email).exists():
        # Never link by email alone: whoever controls the provider's email claim would take over
        # the local account (its grants, its duties). An admin links it (docs/identity.md).
        raise SignInRefused(
            "An account of this portal already uses this email address. "
            "Ask a governance admin to link it to your company account."
        )
    user = User.objects.create_user(
        username=_new_username(claims),
        email=claims.email,
        first_name=claims.first_name,
        last_name=claims.last_name,
    )  # no password: the account signs in through the provider only
    OidcIdentity.objects.create(user=user, issuer=claims.issuer, subject=claims.subject, last_sign_in_at=timezone.now())
    audit.record(
        action="identity.oidc_user_created",
        actor=None,
        target=user,
        metadata={"issuer": claims.issuer, "subject": claims.subject, "username": user.username},
    )
    return user


def _update(identity: OidcIdentity, claims: Claims) -> Any:
    user = identity.user
    if user.is_service_account:
        raise SignInRefused("A service account cannot sign in.")
    if not user.is_active:
        raise SignInRefused("This account is deactivated.")
    wanted = {"email": claims.email, "first_name": claims.first_name, "last_name": claims.last_name}
    User = get_user_model()
    if claims.email and User.objects.filter(email__iexact=claims.email).exclude(pk=user.pk).exists():
        wanted["email"] = user.email  # another account's address: kept as it was
    changes = {name: [getattr(user, name), value] for name, value in wanted.items() if getattr(user, name) != value}
    if changes:
        for name, (_, value) in changes.items():
            setattr(user, name, value)
        user.save(update_fields=list(changes))
        audit.record(action="identity.oidc_user_updated", actor=None, target=user, changes=changes)
    identity.last_sign_in_at = timezone.now()
    identity.save(update_fields=["last_sign_in_at"])
    return user


def _adopt_scim_account(claims: Claims) -> OidcIdentity | None:
    """The account SCIM created for this person, linked at their first sign-in: the provider that
    pushes users by SCIM is the one that signs them in, and its externalId for the person is the
    ID token's OIDC_SCIM_MATCH_CLAIM. Only an exact match of one live SCIM account that has no
    subject of this issuer yet; anything else falls through to a new account (or its refusal)."""
    if not claims.scim_key:
        return None
    from ..scim.models import ScimUser

    matches = list(
        ScimUser.objects.filter(external_id=claims.scim_key, deleted_at__isnull=True, user__is_active=True)
        .exclude(user__oidc_identities__issuer=claims.issuer)
        .select_related("user")[:2]
    )
    if len(matches) != 1:
        return None
    user = matches[0].user
    identity = OidcIdentity.objects.create(user=user, issuer=claims.issuer, subject=claims.subject)
    audit.record(
        action="identity.oidc_linked",
        actor=None,
        target=user,
        metadata={"issuer": claims.issuer, "subject": claims.subject, "by": "scim externalId"},
    )
    return identity


def oidc_user_sign_in(*, claims: Claims) -> tuple[Any, SyncResult]:
    """The account for these claims (created at the first sign-in), updated from them, with its
    OIDC-managed Role memberships and duties made to match the groups claim. Raises SignInRefused
    (audited) for a deactivated or service account, or a new subject whose email a portal account
    already has."""
    with refusal_recorded(
        action="identity.oidc_sign_in", actor=None, metadata={"issuer": claims.issuer, "subject": claims.subject}
    ):
        with transaction.atomic():
            identity = (
                OidcIdentity.objects.select_for_update(of=("self",))
                .select_related("user")
                .filter(issuer=claims.issuer, subject=claims.subject)
                .first()
            )
            if identity is None:
                identity = _adopt_scim_account(claims)
            user = _create(claims) if identity is None else _update(identity, claims)
            synced = memberships_sync(user=user, groups=claims.groups, source=MembershipSource.OIDC, actor=None)
    return user, synced


def oidc_identity_link(*, actor: Any, user: Any, issuer: str, subject: str) -> OidcIdentity:
    """Link an existing portal account to the provider's subject, so that its next OIDC sign-in
    lands in it (for accounts that existed before OIDC, whose email sign-in will not claim)."""
    with refusal_recorded(action="identity.oidc_link", actor=actor, target=user, metadata={"subject": subject}):
        with transaction.atomic():
            if not getattr(actor, "is_superuser", False):
                raise NotPermitted("Only a superuser links accounts to the identity provider.")
            if not issuer or not subject.strip() or len(subject) > 255 or len(issuer) > 255:
                raise InvalidInput(
                    "Give the provider's issuer and the person's subject (1-255 characters).", field="subject"
                )
            if OidcIdentity.objects.filter(issuer=issuer, subject=subject).exists():
                raise ConflictError(f"{subject!r} is linked to an account already.")
            identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
            audit.record(
                action="identity.oidc_linked", actor=actor, target=user, metadata={"issuer": issuer, "subject": subject}
            )
    return identity
