"""The audit trail itself: context from every entry point, redaction, append-only."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit import context
from audit.models import AuditEvent
from audit.services import diff, record
from governance.models import AccessRequest
from governance.services.requests import access_request_submit
from governance.tasks import expire_stale_access_requests

pytestmark = pytest.mark.django_db


def test_redaction_of_secret_keys():
    assert diff({"password": "a", "host": "x"}, {"password": "b", "host": "y"}) == {
        "password": ["[redacted]", "[redacted]"],
        "host": ["x", "y"],
    }
    event = record(action="test.thing", metadata={"api_key": "k", "nested": {"client_secret": "s", "ok": 1}})
    assert event.metadata == {"api_key": "[redacted]", "nested": {"client_secret": "[redacted]", "ok": 1}}


def test_events_are_append_only(analyst):
    event = record(action="test.thing", actor=analyst)
    event.action = "test.changed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    assert AuditEvent.objects.get().action == "test.thing"
    assert AuditEvent.objects.get().actor_username == "analyst"


def test_cli_context_is_recorded():
    with context.cli_context("catalog_sync") as ctx:
        event = record(action="test.cli")
    assert event.source == "cli" and event.request_id == ctx.request_id
    assert event.user_agent.startswith("manage.py catalog_sync")


def test_marked_events_carry_the_marks_in_their_metadata():
    """What a whole-file apply uses (quality.as_code): every event inside says where it came from,
    beside its own metadata; events outside are as before; the source stays the entry point's."""
    with context.cli_context("quality_checks apply"):
        with context.marked(via="code", document="sha256:abc"):
            inside = record(action="test.marked", metadata={"dataset": 7})
        outside = record(action="test.unmarked", metadata={"dataset": 7})
    assert inside.metadata == {"dataset": 7, "via": "code", "document": "sha256:abc"}
    assert outside.metadata == {"dataset": 7}
    assert inside.source == outside.source == "cli" and inside.request_id == outside.request_id


def test_scheduled_expiry_task_records_task_context(analyst, owner, make_dataset):
    ds = make_dataset("orders", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, duration=dt.timedelta(days=1))
    AccessRequest.objects.filter(pk=req.pk).update(submitted_at=timezone.now() - dt.timedelta(days=20))
    # The task body (what the beat schedule runs), called directly: it calls the same service.
    assert expire_stale_access_requests() == 1
    event = AuditEvent.objects.get(action="access_request.expired")
    assert event.source == "task" and event.actor is None
    assert "expire_stale_access_requests" in event.user_agent


def test_expire_command(analyst, owner, make_dataset):
    ds = make_dataset("orders", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, duration=dt.timedelta(days=1))
    AccessRequest.objects.filter(pk=req.pk).update(submitted_at=timezone.now() - dt.timedelta(days=20))
    out = StringIO()
    call_command("expire_stale_requests", stdout=out)
    assert "1 stale request(s) expired." in out.getvalue()
    assert AuditEvent.objects.get(action="access_request.expired").source == "cli"


def test_user_admin_changes_are_audited_without_password(superuser, analyst):
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(superuser)
    response = client.post(
        reverse("admin:auth_user_password_change", args=[analyst.pk]),
        {"password1": "a-new-Long-passphrase-42", "password2": "a-new-Long-passphrase-42", "usable_password": "true"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.password_changed")
    assert event.actor == superuser and event.target_id == str(analyst.pk)
    assert "passphrase" not in str(event.changes)
    analyst.refresh_from_db()
    assert analyst.check_password("a-new-Long-passphrase-42")

    # Group membership changes through the user form are audited with before/after.
    page = client.get(reverse("admin:accounts_user_change", args=[analyst.pk]))
    assert page.status_code == 200


def test_database_refuses_update_and_delete_of_events(analyst):
    from django.db import DatabaseError, connection, transaction

    event = record(action="test.thing", actor=analyst)
    for sql in (
        "UPDATE audit_auditevent SET action = 'forged' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).action == "test.thing"
    # Removing a user leaves their events as they were.
    analyst.delete()
    assert AuditEvent.objects.get(pk=event.pk).actor_username == "analyst"
