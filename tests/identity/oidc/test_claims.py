"""Claims -> the portal account: created at the first sign-in, updated at each, found by issuer + sub
only; hostile claims refused or dropped, never a crash or another person's account; the groups claim
synced with provenance (what an admin gave survives the provider)."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import User
from accounts.roles import AUDITORS, REQUESTERS
from audit.models import AuditEvent
from governance.models import MembershipSource, RoleMembership
from governance.services.roles import role_create, role_member_add
from identity.models import ManagedGroupMembership, OidcIdentity
from identity.oidc.claims import Claims, SignInRefused, mfa_asserted, parse
from identity.oidc.services import oidc_user_sign_in
from identity.services.mappings import mapping_create

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.example.com"


def token(**claims: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "00u-1", "aud": "portal", **claims}


def sign_in(groups: list[str] | None = None, **userinfo: Any) -> User:
    user, _ = oidc_user_sign_in(claims=parse(id_token=token(), userinfo={"groups": groups or [], **userinfo}))
    return user


def test_first_sign_in_creates_the_account_from_the_claims_and_later_ones_update_it() -> None:
    user = sign_in(email="ana@corp.example", given_name="Ana", family_name="Lima", preferred_username="ana.lima")
    assert (user.username, user.email, user.first_name, user.last_name) == (
        "ana.lima",
        "ana@corp.example",
        "Ana",
        "Lima",
    )
    assert not user.has_usable_password()
    assert OidcIdentity.objects.get(issuer=ISSUER, subject="00u-1").user == user

    again = sign_in(email="ana.silva@corp.example", given_name="Ana", family_name="Silva", preferred_username="other")
    assert again.pk == user.pk
    again.refresh_from_db()
    assert (again.username, again.email, again.last_name) == ("ana.lima", "ana.silva@corp.example", "Silva")
    updated = AuditEvent.objects.get(action="identity.oidc_user_updated")
    assert updated.changes["last_name"] == ["Lima", "Silva"]
    assert User.objects.count() == 1


def test_the_same_subject_at_another_issuer_is_another_person() -> None:
    first = sign_in(preferred_username="sam")
    other, _ = oidc_user_sign_in(
        claims=parse(id_token={**token(), "iss": "https://evil.example.com"}, userinfo={"preferred_username": "sam"})
    )
    assert other.pk != first.pk
    assert other.username.startswith("sam-")


def test_an_email_claim_never_takes_over_a_local_account(make_user: Any) -> None:
    local = make_user("root-admin", superuser=True)
    with pytest.raises(SignInRefused, match="already uses this email"):
        sign_in(email=local.email.upper(), preferred_username="root-admin")
    assert not OidcIdentity.objects.exists()
    refused = AuditEvent.objects.get(action="identity.oidc_sign_in")
    assert refused.outcome == "denied"
    assert "already uses this email" in refused.reason


def test_a_preferred_username_of_an_existing_account_gets_another_name(make_user: Any) -> None:
    admin = make_user("admin", superuser=True)
    user = sign_in(preferred_username="ADMIN", email="someone@corp.example")
    assert user.pk != admin.pk
    assert user.username.startswith("ADMIN-") and not user.is_superuser and not user.is_staff


def test_an_email_of_another_account_is_not_copied_onto_a_linked_one(make_user: Any) -> None:
    user = sign_in(email="me@corp.example")
    other = make_user("boss")
    sign_in(email=other.email)
    user.refresh_from_db()
    assert user.email == "me@corp.example"


@pytest.mark.parametrize(
    ("id_token", "userinfo", "message"),
    [
        ({"iss": ISSUER}, {}, "no usable subject"),
        (token(sub=""), {}, "no usable subject"),
        (token(sub=["00u-1"]), {}, "no usable subject"),
        (token(sub={"$ne": None}), {}, "no usable subject"),
        (token(sub="x" * 256), {}, "no usable subject"),
        (token(sub="00u-1\x00admin"), {}, "control characters"),
        (token(), {"sub": "00u-2"}, "another subject"),
    ],
)
def test_a_hostile_subject_is_refused(id_token: dict[str, Any], userinfo: dict[str, Any], message: str) -> None:
    with pytest.raises(SignInRefused, match=message):
        parse(id_token=id_token, userinfo=userinfo)


def test_hostile_profile_claims_are_dropped_or_made_safe() -> None:
    user = sign_in(
        groups={"admins": True},  # type: ignore[arg-type]
        email="not an email<script>",
        given_name=["Ana"],
        family_name="L" * 500 + "\u202e\x07",
        preferred_username="../../etc/passwd; DROP TABLE users;--",
    )
    assert user.email == ""
    assert user.first_name == ""
    assert user.last_name == "L" * 150
    assert user.username == "etcpasswd.DROP.TABLE.users--"
    user, _ = oidc_user_sign_in(claims=parse(id_token=token(sub="00u-2"), userinfo={"preferred_username": "\x00\x01"}))
    assert user.username.startswith("user-")
    claims = parse(id_token=token(), userinfo={"groups": ["ok", 7, None, {"a": 1}, "x" * 256, ""]})
    assert claims.groups == ["ok"]
    assert parse(id_token=token(), userinfo={"groups": "single"}).groups == ["single"]


def test_the_groups_claim_name_is_a_setting(settings: Any) -> None:
    settings.OIDC_GROUPS_CLAIM = "roles"
    claims = parse(id_token=token(roles=["from-id-token"]), userinfo={"groups": ["ignored"]})
    assert claims.groups == ["from-id-token"]


@pytest.mark.parametrize(
    ("amr", "acr", "asserted"),
    [
        (["pwd"], None, False),
        (["pwd", "mfa"], None, True),
        (["hwk"], None, True),
        ("otp", None, True),
        ([{"mfa": 1}], None, False),
        (None, "urn:corp:loa:2", True),
        (None, "urn:corp:loa:1", False),
        (None, ["urn:corp:loa:2"], False),
    ],
)
def test_mfa_is_asserted_by_amr_or_a_configured_acr(settings: Any, amr: Any, acr: Any, asserted: bool) -> None:
    settings.OIDC_MFA_ACR_VALUES = ["urn:corp:loa:2"]
    assert mfa_asserted({"amr": amr, "acr": acr}) is asserted


def test_userinfo_cannot_assert_mfa() -> None:
    assert parse(id_token=token(amr=["pwd"]), userinfo={"amr": ["mfa"]}).mfa is False


def test_a_deactivated_or_service_account_is_refused() -> None:
    user = sign_in()
    User.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(SignInRefused, match="deactivated"):
        sign_in()
    User.objects.filter(pk=user.pk).update(is_active=True, is_service_account=True)
    with pytest.raises(SignInRefused, match="service account"):
        sign_in()


def test_groups_sync_on_every_sign_in_and_leave_what_an_admin_gave(gov_admin: User) -> None:
    from django.contrib.auth.models import Group

    finance = role_create(actor=gov_admin, name="Finance", owner=gov_admin)
    sales = role_create(actor=gov_admin, name="Sales", owner=gov_admin)
    mapping_create(actor=gov_admin, idp_group="finance", role=finance)
    mapping_create(actor=gov_admin, idp_group="sales", role=sales)
    mapping_create(actor=gov_admin, idp_group="auditors", portal_group=Group.objects.get(name=AUDITORS))

    user = sign_in(groups=["Finance", "auditors"])
    assert set(
        RoleMembership.objects.filter(user=user, removed_at__isnull=True).values_list("role__name", "managed_by")
    ) == {("Finance", MembershipSource.OIDC)}
    assert user.groups.filter(name=AUDITORS).exists()
    # An admin adds the person to Sales by hand; the provider never mentioned Sales.
    role_member_add(role=sales, user=user, actor=gov_admin)
    user.groups.add(Group.objects.get(name=REQUESTERS))

    sign_in(groups=[])  # every group removed at the provider
    held = RoleMembership.objects.filter(user=user, removed_at__isnull=True)
    assert [(m.role.name, m.managed_by) for m in held] == [("Sales", MembershipSource.ADMIN)]
    assert list(user.groups.values_list("name", flat=True)) == [REQUESTERS]
    assert not ManagedGroupMembership.objects.filter(user=user).exists()

    sign_in(groups=["sales", "finance"])  # Sales stays the admin's; Finance comes back from the IdP
    held = RoleMembership.objects.filter(user=user, removed_at__isnull=True).order_by("role__name")
    assert [(m.role.name, m.managed_by) for m in held] == [
        ("Finance", MembershipSource.OIDC),
        ("Sales", MembershipSource.ADMIN),
    ]


def test_claims_is_what_the_service_takes() -> None:
    user, synced = oidc_user_sign_in(claims=Claims(issuer=ISSUER, subject="s-9", username_hint="nine"))
    assert user.username == "nine" and not synced.changed


def _scim_pushed(make_user: Any, external_id: str) -> User:
    from identity.scim.services import scim_user_create

    client = make_user("okta-scim", staff=False)
    return scim_user_create(
        actor=client,
        doc={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ana@corp.example",
            "externalId": external_id,
            "emails": [{"value": "ana@corp.example", "primary": True}],
            "active": True,
        },
    )


def test_a_first_sign_in_adopts_the_account_scim_made_for_the_person(make_user: Any) -> None:
    pushed = _scim_pushed(make_user, external_id="00u-1")  # the same key as the ID token's sub
    user = sign_in(email="ana@corp.example", preferred_username="ana")
    assert user.pk == pushed.pk
    assert OidcIdentity.objects.get(issuer=ISSUER, subject="00u-1").user == pushed
    linked = AuditEvent.objects.get(action="identity.oidc_linked")
    assert linked.actor_id is None and linked.metadata["by"] == "scim externalId"
    assert User.objects.filter(email__iexact="ana@corp.example").count() == 1


def test_no_scim_account_is_adopted_without_an_exact_match_or_with_the_rule_off(make_user: Any, settings: Any) -> None:
    _scim_pushed(make_user, external_id="00u-other")
    with pytest.raises(SignInRefused, match="already uses this email"):
        sign_in(email="ana@corp.example")  # the email alone never links
    settings.OIDC_SCIM_MATCH_CLAIM = ""
    with pytest.raises(SignInRefused):
        oidc_user_sign_in(claims=parse(id_token=token(sub="00u-other"), userinfo={"email": "ana@corp.example"}))
    assert not OidcIdentity.objects.exists()
