"""Each kind of event reaches the right people as an email received by a real SMTP server
(tests/mail.py), and never the person who caused it. The worker's code runs in this process here
(`notifications_deliver`, `outbox_sweep`); tests/notifications/test_outbox_faults.py and
test_worker.py run it in a real worker process."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.roles import GOVERNANCE_ADMINS, REQUESTERS
from audit.models import AuditEvent
from governance.models import Grant, JobAction, JobStatus, ProvisioningJob
from governance.services.engine.sweep import provisioning_jobs_sweep
from governance.services.requests import access_request_approve, access_request_deny, access_request_submit
from notifications.models import Delivery, DeliveryStatus, Kind, Notification
from notifications.services.delivery import notifications_deliver, outbox_sweep
from notifications.services.scheduled import grant_ends_announce

pytestmark = pytest.mark.django_db

DAYS = dt.timedelta(days=1)


def deliver_all() -> None:
    """What the worker does after commit: prepare every notification, send what is due."""
    notifications_deliver(notification_ids=list(Notification.objects.values_list("pk", flat=True)))


def addresses(mailbox: Any) -> list[str]:
    return sorted(a for r in mailbox.received for a in r.recipients)


def test_a_submitted_request_is_announced_to_the_approvers_of_its_first_stage_only(
    mailbox, analyst, owner, officer, restricted_dataset
):
    access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="payroll audit", duration=14 * DAYS
    )
    deliver_all()
    assert addresses(mailbox) == ["owner@example.com"]  # not the officer (second stage), not the requester
    [mail] = mailbox.received
    assert (
        mail.subject.startswith("Request #")
        and "hr.employees" in mail.subject
        and "waits for your decision" in mail.subject
    )
    text, html = mail.body("plain"), mail.body("html")
    assert "payroll audit" in text and "dataset owner or steward stage" in text and "14 days" in text
    assert "http://portal.test/portal/requests/" in text
    assert "<code>hr.employees</code>" in html
    # The Message-ID is the delivery row's, so a resend after a crash is the same message.
    delivery = Delivery.objects.get()
    assert mail.message_id == f"<{delivery.message_id}@portal.test>"
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1


def test_the_next_stage_is_announced_to_its_approvers_and_not_to_who_approved_the_first(
    mailbox, analyst, owner, officer, restricted_dataset
):
    req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="audit", duration=14 * DAYS
    )
    deliver_all()
    mailbox.clear()
    access_request_approve(access_request=req, approver=owner, comment="fine by me")
    deliver_all()
    assert addresses(mailbox) == ["officer@example.com"]
    assert "security officer stage" in mailbox.received[0].body()


def test_a_decision_tells_the_requester_with_the_comment_and_not_the_approver(mailbox, analyst, owner, make_dataset):
    ds = make_dataset("ledger", classification="internal", owner=owner)
    approved = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=7 * DAYS)
    other = make_dataset("budget", classification="internal", owner=owner)
    denied = access_request_submit(requester=analyst, dataset=other, justification="curious", duration=7 * DAYS)
    deliver_all()
    mailbox.clear()
    access_request_approve(access_request=approved, approver=owner, comment="Go ahead, for the close only.")
    access_request_deny(access_request=denied, approver=owner, comment="Use the aggregated budget view instead.")
    deliver_all()
    assert addresses(mailbox) == ["analyst@example.com", "analyst@example.com"]
    by_subject = {m.subject: m for m in mailbox.received}
    yes = next(m for s, m in by_subject.items() if "was approved" in s)
    no = next(m for s, m in by_subject.items() if "was denied" in s)
    assert "Go ahead, for the close only." in yes.body() and "public.ledger" in yes.subject
    assert "Use the aggregated budget view instead." in no.body() and "Use the aggregated budget view" in no.body(
        "html"
    )


def test_approving_adds_one_insert_to_the_approval_transaction_and_sends_nothing_in_it(
    mailbox, analyst, owner, make_dataset
):
    ds = make_dataset("ledger", classification="internal", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=7 * DAYS)
    with CaptureQueriesContext(connection) as ctx:
        access_request_approve(access_request=req, approver=owner, comment="ok")
    outbox = [q["sql"] for q in ctx.captured_queries if "notifications_" in q["sql"]]
    assert len(outbox) == 1 and outbox[0].startswith('INSERT INTO "notifications_notification"'), outbox
    assert mailbox.received == []  # nothing is sent inside the request: the worker sends after commit


def test_access_ending_in_7_days_and_in_1_day_is_announced_once_each_with_a_renew_link(
    mailbox, analyst, owner, make_dataset
):
    ds = make_dataset("ledger", classification="internal", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=30 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    deliver_all()
    mailbox.clear()
    assert grant_ends_announce(now=grant.ends_at - 10 * DAYS) == 0
    assert grant_ends_announce(now=grant.ends_at - 6 * DAYS) == 1
    assert grant_ends_announce(now=grant.ends_at - 5 * DAYS) == 0  # once per end
    assert grant_ends_announce(now=grant.ends_at - dt.timedelta(hours=20)) == 1
    deliver_all()
    assert addresses(mailbox) == ["analyst@example.com", "analyst@example.com"]
    week = next(m for m in mailbox.received if "ends in 7 days" in m.subject)
    day = next(m for m in mailbox.received if "ends tomorrow" in m.subject)
    renew = f"http://portal.test/portal/datasets/{ds.pk}/request/?renew={grant.pk}"
    assert renew in week.body() and renew in day.body() and f'href="{renew}"' in day.body("html").replace("&amp;", "&")
    assert AuditEvent.objects.filter(action="grant.end_announced", target_id=str(grant.pk)).count() == 2


def test_a_short_grant_is_not_warned_a_week_ahead(analyst, owner, make_dataset):
    ds = make_dataset("ledger", classification="internal", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=3 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    assert grant_ends_announce(now=grant.starts_at + dt.timedelta(minutes=1)) == 0
    assert grant_ends_announce(now=grant.ends_at - dt.timedelta(hours=12)) == 1


def test_an_overdue_revocation_is_told_to_the_governance_admins_once(mailbox, analyst, owner, make_user, make_dataset):
    admin = make_user("opsadmin", GOVERNANCE_ADMINS)
    ds = make_dataset("ledger", classification="internal", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=7 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    job = ProvisioningJob.objects.create(
        grant=grant, action=JobAction.REVOKE, status=JobStatus.FAILED, last_error="boom"
    )
    ProvisioningJob.objects.filter(pk=job.pk).update(queued_at=job.queued_at - dt.timedelta(hours=1))
    deliver_all()
    mailbox.clear()
    provisioning_jobs_sweep()
    provisioning_jobs_sweep()  # raised on every sweep, told once
    deliver_all()
    assert addresses(mailbox) == [admin.email]
    assert "Revocation overdue" in mailbox.received[0].subject and "boom" in mailbox.received[0].body()


def test_a_muted_kind_is_not_sent_and_a_digest_collects_the_rest_in_one_email(
    mailbox, analyst, owner, make_dataset, client
):
    from notifications.services.preferences import preference_set
    from notifications.services.scheduled import digests_send

    preference_set(user=owner, actor=owner, channel="email", digest=True, muted=[])
    preference_set(user=analyst, actor=analyst, channel="email", digest=False, muted=[Kind.REQUEST_DECIDED])
    requests = [
        access_request_submit(
            requester=analyst, dataset=make_dataset(f"t{i}", owner=owner), justification="x", duration=7 * DAYS
        )
        for i in range(3)
    ]
    deliver_all()
    assert mailbox.received == []  # the owner's three are held for the digest
    assert Delivery.objects.filter(recipient=owner, status=DeliveryStatus.HELD).count() == 3
    access_request_approve(access_request=requests[0], approver=owner)
    deliver_all()
    assert mailbox.received == []  # the analyst muted decisions
    assert digests_send() == 1
    assert digests_send() == 0  # nothing held any more
    outbox_sweep()
    [digest] = mailbox.received
    assert digest.recipients == ["owner@example.com"] and "3 notifications" in digest.subject
    for req in requests:
        assert f"Request #{req.pk} waits for your decision" in digest.body()
    assert set(
        Delivery.objects.filter(recipient=owner, kind=Kind.REQUEST_WAITING).values_list("status", flat=True)
    ) == {DeliveryStatus.DIGESTED}


def test_an_approver_with_many_requests_in_a_day_gets_the_rest_in_the_digest(
    mailbox, analyst, owner, make_dataset, settings
):
    settings.NOTIFICATIONS_DIGEST_AFTER = 2
    for i in range(4):
        access_request_submit(
            requester=analyst, dataset=make_dataset(f"t{i}", owner=owner), justification="x", duration=7 * DAYS
        )
        deliver_all()
    assert len(mailbox.to("owner@example.com")) == 2
    assert Delivery.objects.filter(recipient=owner, status=DeliveryStatus.HELD).count() == 2


def test_a_mail_server_that_is_down_delays_the_email_and_it_is_sent_once_when_it_answers(
    mailbox, analyst, owner, make_dataset, settings
):
    from tests.processes import free_port

    ds = make_dataset("ledger", owner=owner)
    settings.EMAIL_PORT = free_port()  # nothing listens there
    settings.NOTIFICATIONS_RETRY_BASE_SECONDS = 0.01
    settings.NOTIFICATIONS_RETRY_MAX_SECONDS = 0.01
    access_request_submit(requester=analyst, dataset=ds, justification="x", duration=7 * DAYS)
    deliver_all()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert "Connection refused" in delivery.last_error or "ConnectionRefused" in delivery.last_error
    settings.EMAIL_PORT = mailbox.port
    import time

    time.sleep(0.05)  # past its backoff
    assert outbox_sweep()["sent"] == 1
    assert outbox_sweep()["sent"] == 0
    assert len(mailbox.received) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2 and delivery.last_error == ""


def test_an_address_the_server_refuses_fails_at_once_and_is_audited(mailbox, analyst, owner, make_dataset):
    owner.email = ""
    owner.save()
    access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="x", duration=7 * DAYS
    )
    deliver_all()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and "no email address" in delivery.last_error
    assert AuditEvent.objects.filter(action="notification.delivery_failed", target_id=str(delivery.pk)).exists()
    assert mailbox.received == []


def test_someone_who_deactivated_is_not_told(mailbox, analyst, make_user, make_dataset):
    gone = make_user("gone", REQUESTERS)
    ds = make_dataset("ledger", owner=gone)
    gone.is_active = False
    gone.save()
    access_request_submit(requester=analyst, dataset=ds, justification="x", duration=7 * DAYS)
    deliver_all()
    assert mailbox.received == []
    assert Notification.objects.get().note


def test_a_person_sets_their_preferences_on_the_portal_page_and_sees_what_was_sent(
    mailbox, client, analyst, owner, make_dataset
):
    access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="x", duration=7 * DAYS
    )
    deliver_all()
    client.force_login(owner)
    page = client.get("/portal/notifications/")
    assert page.status_code == 200
    assert "waits for your decision" in page.content.decode()  # what was sent lately
    response = client.post(
        "/portal/notifications/", {"channel": "email", "digest": "on", "muted": [Kind.DRIFT_FOUND]}, follow=True
    )
    assert "preferences are saved" in response.content.decode()
    pref = owner.notification_preference
    assert pref.digest and pref.muted == [Kind.DRIFT_FOUND]
    event = AuditEvent.objects.get(action="notification_preference.changed")
    assert event.actor == owner and event.changes["muted"] == [[], [Kind.DRIFT_FOUND]]
    bad = client.post("/portal/notifications/", {"channel": "pigeon"})
    assert bad.status_code == 200 and "pigeon" in bad.content.decode()  # refused on the field
    owner.notification_preference.refresh_from_db()
    assert owner.notification_preference.channel == "email"


def test_the_workbench_lists_the_outbox_with_the_bodies_as_sent_at_a_pinned_query_count(
    mailbox, analyst, owner, gov_admin, make_dataset, client
):
    """With `make run` (console backend) this is where the demo's emails are read."""
    from django.urls import reverse

    def populate(n: int) -> None:
        start = Notification.objects.count()
        for i in range(start, start + n):
            access_request_submit(
                requester=analyst, dataset=make_dataset(f"t{i}", owner=owner), justification="x", duration=7 * DAYS
            )
        deliver_all()

    def count(url: str) -> int:
        client.get(url)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    client.force_login(gov_admin)  # a governance admin, not a superuser: the group's view permission
    populate(2)
    lists = [reverse("admin:notifications_delivery_changelist"), reverse("admin:notifications_notification_changelist")]
    few = [count(url) for url in lists]
    populate(12)
    many = [count(url) for url in lists]
    assert many == few, (few, many)  # no N+1
    assert many == [9, 9]
    delivery = Delivery.objects.order_by("pk").first()
    assert delivery is not None
    page = client.get(reverse("admin:notifications_delivery_change", args=[delivery.pk])).content.decode()
    assert delivery.subject in page and f"{delivery.message_id}@portal.test" in page
    assert "dataset owner or steward stage" in page  # the text body
    assert "srcdoc=" in page and "&lt;code&gt;" in page  # the HTML body, escaped into a sandboxed frame


def test_a_table_name_with_a_line_break_gives_a_one_line_subject_not_a_stuck_delivery(
    mailbox, analyst, owner, make_dataset
):
    access_request_submit(
        requester=analyst, dataset=make_dataset("two\nlines", owner=owner), justification="x", duration=7 * DAYS
    )
    deliver_all()
    [mail] = mailbox.received
    assert 'public."two lines"' in mail.subject and "\n" not in mail.subject
    assert Delivery.objects.get().status == DeliveryStatus.SENT
