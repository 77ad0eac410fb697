"""Every write the SCIM edge makes: users and groups, each in one transaction with its audit event,
the actor being the SCIM client (the owner of the token with the `scim` scope).

PUT and PATCH end in the same place: PATCH applies its operations to the resource's current
document (identity.scim.patch) and the result is written as a PUT would write it. A change of a
group's name or members re-syncs every affected person through the one sync
(identity.services.sync.memberships_sync) with their full list of SCIM groups. Deactivation (active
false, or DELETE) goes through governance's offboarding service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from governance.errors import DomainError
from governance.models import MembershipSource
from governance.services.offboarding import user_offboard

from ..services.sync import memberships_sync
from .errors import ScimError, bad
from .models import ScimGroup, ScimGroupMember, ScimUser
from .patch import as_bool, canonical_value
from .schema import NAMES
from .selectors import scim_users, user_pk

User = get_user_model()
USER_FIELDS = ["username", "first_name", "last_name", "email", "is_active"]
OFFBOARD_REASON = "Deactivated by the identity provider (SCIM)"


# --- documents in, checked ---------------------------------------------------------------------


def document(kind: str, body: Any) -> dict[str, Any]:
    """A POST or PUT body in this server's spelling: attribute names in any case, unknown ones
    (and extensions, and read-only ones) dropped, booleans given as strings coerced."""
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object.", "invalidSyntax")
    out: dict[str, Any] = {}
    for name, value in body.items():
        attr = NAMES[kind].get(str(name).lower())
        if attr is None or attr in ("id", "meta", "schemas", "groups"):
            continue
        out[attr] = canonical_value(kind, attr, value)
    return out


def _text(doc: dict[str, Any], attr: str, limit: int, *, required: bool = False) -> str:
    value = doc.get(attr)
    if isinstance(value, str) and "\x00" in value:
        raise bad(f"{attr} must not contain NUL characters.", "invalidValue")
    if value is None or value == "":
        if required:
            raise bad(f"{attr} is required.", "invalidValue")
        return ""
    if not isinstance(value, str):
        raise bad(f"{attr} must be a string.", "invalidValue")
    value = value.strip()
    if required and not value:
        raise bad(f"{attr} is required.", "invalidValue")
    if len(value) > limit:
        raise bad(f"{attr} has at most {limit} characters.", "invalidValue")
    return value


def _user_fields(doc: dict[str, Any]) -> dict[str, Any]:
    username = _text(doc, "userName", 150, required=True)
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise bad("userName may contain letters, digits and @ . + - _ only.", "invalidValue") from None
    name = doc.get("name") or {}
    if not isinstance(name, dict):
        raise bad("name must be an object (givenName, familyName).", "invalidValue")
    given = _text({"name.givenName": name.get("givenName")}, "name.givenName", 150)
    family = _text({"name.familyName": name.get("familyName")}, "name.familyName", 150)
    emails = doc.get("emails") or []
    if not isinstance(emails, list) or not all(isinstance(e, dict) for e in emails):
        raise bad("emails must be a list of objects.", "invalidValue")
    clean: list[dict[str, Any]] = []
    for n, email in enumerate(emails):
        value = _text({f"emails[{n}].value": email.get("value")}, f"emails[{n}].value", 254, required=True)
        try:
            validate_email(value)
        except ValidationError:
            raise bad(f"emails[{n}].value is not an email address.", "invalidValue") from None
        item: dict[str, Any] = {"value": value}
        if email.get("type") is not None:
            item["type"] = _text({f"emails[{n}].type": email.get("type")}, f"emails[{n}].type", 64)
        primary = as_bool(email.get("primary"))
        if primary is not None:
            if not isinstance(primary, bool):
                raise bad(f"emails[{n}].primary must be a boolean.", "invalidValue")
            item["primary"] = primary
        clean.append(item)
    if sum(1 for e in clean if e.get("primary")) > 1:
        raise bad("At most one email may be primary.", "invalidValue")
    main = next((e["value"] for e in clean if e.get("primary")), clean[0]["value"] if clean else "")
    active = as_bool(doc.get("active"))
    if active is not None and not isinstance(active, bool):
        raise bad("active must be a boolean.", "invalidValue")
    return {
        "username": username,
        "first_name": given,
        "last_name": family,
        "email": main,
        "active": active,
        "external_id": _text(doc, "externalId", 255),
        "display_name": _text(doc, "displayName", 255),
        "emails": clean,
    }


def _username_free(username: str, *, but: Any = None) -> None:
    taken = User.objects.filter(username__iexact=username)
    if but is not None:
        taken = taken.exclude(pk=but.pk)
    if taken.exists():
        raise ScimError(409, f"userName {username!r} is taken.", "uniqueness")


# --- users ---------------------------------------------------------------------------------------


def scim_user_create(*, actor: Any, doc: dict[str, Any]) -> Any:
    fields = _user_fields(doc)
    with transaction.atomic():
        _username_free(fields["username"])
        user = User(
            username=fields["username"],
            first_name=fields["first_name"],
            last_name=fields["last_name"],
            email=fields["email"],
            is_active=fields["active"] is not False,
        )
        user.set_unusable_password()  # people sign in through the provider
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:  # a concurrent create took the name
            raise ScimError(409, f"userName {fields['username']!r} is taken.", "uniqueness") from None
        ScimUser.objects.create(
            user=user, external_id=fields["external_id"], display_name=fields["display_name"], emails=fields["emails"]
        )
        audit.record(
            action="scim.user_created",
            actor=actor,
            target=user,
            changes=audit.diff({}, audit.snapshot(user, USER_FIELDS)),
            metadata={"external_id": fields["external_id"]},
        )
    return user


def scim_user_update(*, actor: Any, user: Any, doc: dict[str, Any]) -> Any:
    """Replace the user's attributes with `doc` (a PUT, or a PATCH's result). active false
    offboards; active true again reactivates and re-syncs the person's SCIM groups (grants that
    were revoked stay revoked: access is asked for again)."""
    fields = _user_fields(doc)
    with transaction.atomic():
        locked = scim_users().select_for_update(of=("self",)).filter(pk=user.pk).first()
        if locked is None:
            raise ScimError(404, f"No user {user.pk}.")
        _username_free(fields["username"], but=locked)
        before = audit.snapshot(locked, USER_FIELDS)
        scim, _ = ScimUser.objects.get_or_create(user=locked)
        scim_before = {"external_id": scim.external_id, "display_name": scim.display_name, "emails": scim.emails}
        locked.username, locked.first_name = fields["username"], fields["first_name"]
        locked.last_name, locked.email = fields["last_name"], fields["email"]
        locked.save(update_fields=["username", "first_name", "last_name", "email"])
        scim.external_id, scim.display_name, scim.emails = (
            fields["external_id"],
            fields["display_name"],
            fields["emails"],
        )
        scim.save()
        scim_after = {"external_id": scim.external_id, "display_name": scim.display_name, "emails": scim.emails}
        changes = audit.diff(before, audit.snapshot(locked, USER_FIELDS)) | audit.diff(scim_before, scim_after)
        if changes:
            audit.record(action="scim.user_updated", actor=actor, target=locked, changes=changes)
        if fields["active"] is False:
            # Every time, not only on the change: an account switched off in the portal may still
            # hold something, and offboarding what is already offboarded changes nothing.
            _offboard(user=locked, actor=actor)
        elif fields["active"] is True and not locked.is_active:
            locked.is_active = True
            locked.save(update_fields=["is_active"])
            audit.record(
                action="scim.user_reactivated", actor=actor, target=locked, changes={"is_active": [False, True]}
            )
            _sync([locked], actor)
    return locked


def _offboard(*, user: Any, actor: Any) -> None:
    try:
        user_offboard(user=user, actor=actor, reason=OFFBOARD_REASON)
    except DomainError as exc:  # e.g. the SCIM client's own account
        raise ScimError(exc.status if exc.status in (400, 403, 409) else 400, exc.message) from exc


def scim_user_delete(*, actor: Any, user: Any) -> None:
    """Offboard the person, take them out of every SCIM group, and hide them from SCIM (404 from
    now on). The account row stays: grants, requests and the audit trail point at it."""
    with transaction.atomic():
        locked = scim_users().select_for_update(of=("self",)).filter(pk=user.pk).first()
        if locked is None:
            raise ScimError(404, f"No user {user.pk}.")
        _offboard(user=locked, actor=actor)
        groups = list(ScimGroup.objects.filter(memberships__user=locked).values_list("display_name", flat=True))
        ScimGroupMember.objects.filter(user=locked).delete()
        scim, _ = ScimUser.objects.get_or_create(user=locked)
        scim.deleted_at = timezone.now()
        scim.save(update_fields=["deleted_at", "updated_at"])
        audit.record(action="scim.user_deleted", actor=actor, target=locked, metadata={"left_groups": sorted(groups)})


# --- groups --------------------------------------------------------------------------------------


def _member_ids(doc: dict[str, Any]) -> list[str]:
    members = doc.get("members") or []
    if not isinstance(members, list):
        raise bad("members must be a list.", "invalidValue")
    ids: list[str] = []
    for n, member in enumerate(members):
        if not isinstance(member, dict):
            raise bad(f"members[{n}] must be an object.", "invalidValue")
        value = member.get("value")
        if value in (None, "") and isinstance(member.get("$ref"), str):
            value = urlsplit(member["$ref"]).path.rstrip("/").rsplit("/", 1)[-1]
        if not isinstance(value, str | int) or str(value) == "":
            raise bad(f"members[{n}].value must name a user's id.", "invalidValue")
        if str(value) not in ids:
            ids.append(str(value))
    return ids


def _members(ids: list[str]) -> list[Any]:
    wanted = [pk for pk in map(user_pk, ids) if pk is not None]
    users = {str(u.pk): u for u in scim_users().filter(pk__in=wanted)}
    unknown = [i for i in ids if i not in users]
    if unknown:
        raise bad(f"members: no user with id {', '.join(unknown[:5])}.", "invalidValue")
    return [users[i] for i in ids]


def _group_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "display_name": _text(doc, "displayName", 255, required=True),
        "external_id": _text(doc, "externalId", 255),
        "members": _members(_member_ids(doc)),
    }


def _name_free(name: str, *, but: ScimGroup | None = None) -> None:
    taken = ScimGroup.objects.filter(display_name__iexact=name)
    if but is not None:
        taken = taken.exclude(pk=but.pk)
    if taken.exists():
        raise ScimError(409, f"A group named {name!r} exists.", "uniqueness")


def _sync(users: list[Any], actor: Any) -> None:
    """Each active person's SCIM-managed memberships follow their full list of SCIM groups."""
    for user in sorted(users, key=lambda u: u.pk):
        if not user.is_active:
            continue  # offboarded: nothing comes back until the provider reactivates them
        names = list(ScimGroup.objects.filter(memberships__user=user).values_list("display_name", flat=True))
        memberships_sync(user=user, groups=names, source=MembershipSource.SCIM, actor=actor)


def _set_members(group: ScimGroup, members: list[Any]) -> tuple[list[Any], list[Any]]:
    current = {m.user_id: m.user for m in group.memberships.select_related("user")}
    wanted = {u.pk: u for u in members}
    added = [u for pk, u in wanted.items() if pk not in current]
    removed = [u for pk, u in current.items() if pk not in wanted]
    ScimGroupMember.objects.filter(group=group, user_id__in=[u.pk for u in removed]).delete()
    ScimGroupMember.objects.bulk_create([ScimGroupMember(group=group, user=u) for u in added])
    return added, removed


def scim_group_create(*, actor: Any, doc: dict[str, Any]) -> ScimGroup:
    fields = _group_fields(doc)
    with transaction.atomic():
        _name_free(fields["display_name"])
        try:
            with transaction.atomic():
                group = ScimGroup.objects.create(display_name=fields["display_name"], external_id=fields["external_id"])
        except IntegrityError:
            raise ScimError(409, f"A group named {fields['display_name']!r} exists.", "uniqueness") from None
        added, _ = _set_members(group, fields["members"])
        audit.record(
            action="scim.group_created",
            actor=actor,
            target=group,
            metadata={"name": group.display_name, "members": sorted(u.username for u in added)},
        )
        _sync(added, actor)
    return group


def scim_group_update(*, actor: Any, group: ScimGroup, doc: dict[str, Any]) -> ScimGroup:
    fields = _group_fields(doc)
    with transaction.atomic():
        locked = ScimGroup.objects.select_for_update().filter(pk=group.pk).first()
        if locked is None:
            raise ScimError(404, f"No group {group.pk}.")
        _name_free(fields["display_name"], but=locked)
        renamed = locked.display_name != fields["display_name"]
        changes = audit.diff(
            {"display_name": locked.display_name, "external_id": locked.external_id},
            {"display_name": fields["display_name"], "external_id": fields["external_id"]},
        )
        locked.display_name, locked.external_id = fields["display_name"], fields["external_id"]
        locked.save()
        kept = [m.user for m in locked.memberships.select_related("user")] if renamed else []
        added, removed = _set_members(locked, fields["members"])
        if added or removed:
            changes["members_added"] = sorted(u.username for u in added)
            changes["members_removed"] = sorted(u.username for u in removed)
        if changes:
            audit.record(action="scim.group_updated", actor=actor, target=locked, changes=changes)
        affected = {u.pk: u for u in [*kept, *added, *removed]}
        _sync(list(affected.values()), actor)
    return locked


def scim_group_delete(*, actor: Any, group: ScimGroup) -> None:
    with transaction.atomic():
        locked = ScimGroup.objects.select_for_update().filter(pk=group.pk).first()
        if locked is None:
            raise ScimError(404, f"No group {group.pk}.")
        members = [m.user for m in locked.memberships.select_related("user")]
        audit.record(
            action="scim.group_deleted",
            actor=actor,
            target=locked,
            metadata={"name": locked.display_name, "members": sorted(u.username for u in members)},
        )
        locked.delete()
        _sync(members, actor)
