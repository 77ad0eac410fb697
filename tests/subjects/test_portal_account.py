"""An erasure whose subject is a portal user: the account is pseudonymised and the audit trail shows
the pseudonym everywhere it is displayed (admin, API list, detail and export), through a redaction
record; no event is edited, so `audit_verify` still passes (docs/subjects.md)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.roles import AUDITORS, REQUESTERS
from accounts.tokens import api_token_create
from audit.models import ActorRedaction, AuditEvent
from governance.services.requests import access_request_submit
from subjects.models import RequestState
from subjects.services.requests import (
    subject_request_approve,
    subject_request_create,
    subject_request_execute,
    subject_request_preview,
)
from tests.audit.trail import verify_cli

from .conftest import SUBJECT, dataset

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "adalovelace7"


def _api(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, scopes='read', name='t').secret}")
    return client


def test_an_erased_portal_user_is_shown_under_a_pseudonym_and_the_trail_still_verifies(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], make_user: Any
) -> None:
    shop, _crm = governed
    creator, approver = privacy
    auditor = make_user("auditor", AUDITORS, superuser=True)
    subject = make_user(NAME, REQUESTERS)
    subject.email, subject.first_name, subject.last_name = SUBJECT.upper(), "Ada", "Lovelace"
    subject.save()
    # The subject acted in the portal: their access request is in the trail under their name.
    access_request_submit(
        requester=subject,
        dataset=dataset(shop, "shop", "orders"),
        justification=f"Quarterly report by {NAME}",
        longest_allowed=True,
    )
    acted = AuditEvent.objects.filter(actor_id=subject.pk)
    assert acted.exists() and set(acted.values_list("actor_username", flat=True)) == {NAME}
    api_token_create(user=subject, scopes="read", name="mine")

    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    request = subject_request_preview(actor=creator, request=request)
    request = subject_request_approve(actor=approver, request=request)
    request = subject_request_execute(actor=creator, request=request)
    assert request.state == RequestState.DONE, request.error

    # The account: switched off, no personal data, its token revoked; the rows pointing at it stay.
    account = get_user_model().objects.get(pk=subject.pk)
    redaction = ActorRedaction.objects.get(actor_id=subject.pk)
    assert account.username == redaction.pseudonym and account.username.startswith("erased-")
    assert (account.email, account.first_name, account.last_name, account.is_active) == ("", "", "", False)
    assert not account.has_usable_password()
    assert not ApiToken.objects.filter(user=subject, revoked_at__isnull=True).exists()
    assert redaction.approved_by == approver and redaction.recorded_by == creator
    assert NAME not in str(redaction.digests)

    # The events are not edited (the stored row keeps what its MAC covers) and the trail verifies.
    assert set(acted.values_list("actor_username", flat=True)) == {NAME}
    code, out, err = verify_cli()
    assert code == 0, out + err

    # The redaction and the step are audited, with counts only.
    recorded = AuditEvent.objects.get(action="audit.actor_redacted")
    assert (recorded.actor, recorded.target_id, recorded.metadata["events"]) == (
        creator,
        str(redaction.pk),
        acted.count(),
    )
    step = AuditEvent.objects.get(action="subject_request.portal_account_done", target_id=str(request.pk))
    assert step.metadata["accounts"] == 1 and step.metadata["events_redacted"] == acted.count()
    assert AuditEvent.objects.filter(action="user.pseudonymised", target_id=str(subject.pk)).exists()

    # Every display of the trail shows the pseudonym, never the name, the e-mail or the person's names.
    def hidden(text: str) -> None:
        lowered = text.lower()
        assert NAME not in lowered and SUBJECT not in lowered and "lovelace" not in lowered, text[:2000]

    admin = Client()
    admin.force_login(auditor)
    listing = admin.get(reverse("admin:audit_auditevent_changelist") + "?o=-1")
    assert listing.status_code == 200
    page = listing.content.decode()
    hidden(page)
    assert redaction.pseudonym in page
    one = acted.order_by("pk").first()
    assert one is not None
    detail = admin.get(reverse("admin:audit_auditevent_change", args=[one.pk])).content.decode()
    hidden(detail)
    assert redaction.pseudonym in detail
    searched = admin.get(reverse("admin:audit_auditevent_changelist") + f"?q={NAME}").content.decode()
    assert f"/{one.pk}/change/" not in searched  # the old name does not lead to the pseudonym

    api = _api(auditor)
    rows = api.get("/api/v1/audit-events/?page_size=1000").json()["results"]
    hidden(str(rows))
    assert redaction.pseudonym in {r["actor_username"] for r in rows}
    hidden(str(api.get(f"/api/v1/audit-events/{one.pk}/").json()))
    assert api.get(f"/api/v1/audit-events/?actor={NAME}").json()["results"] == []
    mine = api.get(f"/api/v1/audit-events/?actor={redaction.pseudonym}").json()["results"]
    assert {r["id"] for r in mine} >= set(acted.values_list("pk", flat=True))
    for kind in ("jsonl", "csv"):
        export: Any = api.get(f"/api/v1/audit-events/export/?format={kind}")
        hidden(b"".join(export.streaming_content).decode())

    # A redaction is append-only, in the database too.
    with pytest.raises(PermissionError):
        redaction.delete()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cur:
        cur.execute("UPDATE audit_actorredaction SET pseudonym = 'x' WHERE id = %s", [redaction.pk])
