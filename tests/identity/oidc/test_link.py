"""An account that existed before OIDC is linked to the provider's subject by a superuser; its next
sign-in lands in it (with its grants), which no email claim could do by itself."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from identity.oidc.claims import parse
from identity.oidc.services import oidc_user_sign_in

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.example.com"


def test_a_linked_account_is_the_one_the_subject_signs_in_to(make_user: Any, capsys: Any) -> None:
    make_user("root", superuser=True)
    local = make_user("dana")
    call_command("oidc_link", "dana", "00u-dana", "--actor", "root", "--issuer", ISSUER)
    assert "dana signs in as 00u-dana" in capsys.readouterr().out
    user, _ = oidc_user_sign_in(
        claims=parse(id_token={"iss": ISSUER, "sub": "00u-dana"}, userinfo={"email": local.email})
    )
    assert user.pk == local.pk
    linked = AuditEvent.objects.get(action="identity.oidc_linked")
    assert (linked.metadata["subject"], linked.target_id) == ("00u-dana", str(local.pk))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dana", "00u-dana", "--actor", "dana", "--issuer", ISSUER], "Only a superuser"),
        (["nobody", "00u-x", "--actor", "root", "--issuer", ISSUER], "No user named 'nobody'"),
        (["dana", " ", "--actor", "root", "--issuer", ISSUER], "subject"),
        (["dana", "00u-taken", "--actor", "root", "--issuer", ISSUER], "linked to an account already"),
    ],
)
def test_bad_links_are_one_line_errors(make_user: Any, argv: list[str], message: str) -> None:
    make_user("root", superuser=True)
    make_user("dana")
    make_user("erin")
    call_command("oidc_link", "erin", "00u-taken", "--actor", "root", "--issuer", ISSUER)
    with pytest.raises(CommandError, match=message):
        call_command("oidc_link", *argv)


def test_without_oidc_the_issuer_must_be_given(settings: Any, make_user: Any) -> None:
    settings.OIDC_ENABLED = False
    make_user("root", superuser=True)
    with pytest.raises(CommandError, match="pass --issuer"):
        call_command("oidc_link", "root", "00u-1", "--actor", "root")
