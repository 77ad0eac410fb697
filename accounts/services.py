"""Writes to people and teams from the admin, audited in the same transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit import services as audit

USER_FIELDS = [
    "username",
    "first_name",
    "last_name",
    "email",
    "is_active",
    "is_staff",
    "is_superuser",
    "is_service_account",
]


def _perm_names(user: Any) -> list[str]:
    return sorted(
        f"{app}.{code}" for app, code in user.user_permissions.values_list("content_type__app_label", "codename")
    )


def user_save_from_admin(*, actor: Any, form: Any, change: bool) -> Any:
    """Save the admin's user form (fields and groups) and record what changed (never the hash)."""
    with transaction.atomic():
        user = form.instance
        before: dict[str, Any] = {}
        groups_before: list[str] = []
        perms_before: list[str] = []
        if change and user.pk:
            from .models import User

            old = User.objects.get(pk=user.pk)
            before = audit.snapshot(old, USER_FIELDS)
            groups_before = sorted(old.groups.values_list("name", flat=True))
            perms_before = _perm_names(old)
        password_changed = "password" in form.changed_data or "password1" in form.changed_data
        user = form.save(commit=False)
        user.save()
        form.save_m2m()
        changes = audit.diff(before, audit.snapshot(user, USER_FIELDS))
        groups_after = sorted(user.groups.values_list("name", flat=True))
        if groups_after != groups_before:
            changes["groups"] = [groups_before, groups_after]
        perms_after = _perm_names(user)
        if perms_after != perms_before:
            changes["user_permissions"] = [perms_before, perms_after]
        if password_changed:
            changes["password"] = [audit.REDACTED, audit.REDACTED]
        if changes or not change:
            audit.record(action="user.updated" if change else "user.created", actor=actor, target=user, changes=changes)
    return user


def team_save_from_admin(*, actor: Any, form: Any, change: bool) -> Any:
    with transaction.atomic():
        before = {"name": form.initial.get("name"), "description": form.initial.get("description")} if change else {}
        team = form.save()
        after = {"name": team.name, "description": team.description}
        changes = audit.diff(before, after)
        if changes or not change:
            audit.record(action="team.updated" if change else "team.created", actor=actor, target=team, changes=changes)
    return team


def team_members_save_from_admin(*, actor: Any, team: Any, formset: Any) -> None:
    with transaction.atomic():
        before = sorted(team.memberships.values_list("user__username", flat=True)) if team.pk else []
        formset.save()
        after = sorted(team.memberships.values_list("user__username", flat=True))
        if before != after:
            audit.record(action="team.members_changed", actor=actor, target=team, changes={"members": [before, after]})


def user_password_changed(*, actor: Any, user_id: int) -> None:
    """Record that an admin set someone's password (the value and hash are never recorded)."""
    from .models import User

    user = User.objects.get(pk=user_id)
    audit.record(
        action="user.password_changed", actor=actor, target=user, changes={"password": [audit.REDACTED, audit.REDACTED]}
    )


def user_pseudonymise(*, user: Any, actor: Any, approved_by: Any, reference: str) -> dict[str, int]:
    """Erase a person from the portal's own records (a data-subject erasure, docs/subjects.md): the
    account stays (requests, approvals and grants point at it) but is switched off and holds no
    personal data any more (username a pseudonym, no e-mail, no name, no usable password, its API
    tokens revoked), and the audit trail shows the pseudonym wherever it showed them
    (audit.redaction: a redaction record; the events themselves are never edited). One audit event,
    holding counts only. Returns the counts: events redacted and tokens revoked."""
    import secrets

    from django.utils import timezone

    from audit import redaction
    from audit.models import AuditEvent

    from .models import ApiToken, User

    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        pseudonym = f"erased-{secrets.token_hex(5)}"
        values = {locked.username, locked.email, locked.first_name, locked.last_name, locked.get_full_name()}
        # Every username the person acted under (a renamed account's events keep the old one).
        values |= set(AuditEvent.objects.filter(actor_id=locked.pk).values_list("actor_username", flat=True).distinct())
        events = AuditEvent.objects.filter(actor_id=locked.pk).count()
        redaction.actor_redaction_record(
            actor_id=locked.pk,
            values=[v for v in values if v],
            pseudonym=pseudonym,
            reference=reference,
            approved_by=approved_by,
            recorded_by=actor,
        )
        tokens = ApiToken.objects.filter(user=locked, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor
        )
        locked.username, locked.email, locked.first_name, locked.last_name = pseudonym, "", "", ""
        locked.is_active = False
        locked.set_unusable_password()
        locked.save(update_fields=["username", "email", "first_name", "last_name", "is_active", "password"])
        audit.record(
            action="user.pseudonymised",
            actor=actor,
            target=locked,
            target_repr=pseudonym,
            reason=reference[:500],
            metadata={"events_redacted": events, "tokens_revoked": tokens},
        )
    user.username, user.email, user.first_name, user.last_name, user.is_active = pseudonym, "", "", "", False
    return {"events_redacted": events, "tokens_revoked": tokens}
