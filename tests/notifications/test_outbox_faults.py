"""The outbox with a real worker process killed mid-send (SIGKILL: no cleanup, no acknowledgement)
and a real SMTP server (tests/mail.py) that holds its answer at the moment the test kills it.

- Killed after the server received the message, before its 250 reached the worker (so before the
  row could be marked sent): the delivery's lease passes, the sweeper claims it again and the next
  worker sends it again under the same Message-ID. The server holds two copies of one message, as
  any mail system would see them: the same Message-ID, which is what de-duplicates it.
- Killed before the message (at RCPT): the server never had it; it is sent once, by the next worker.

Timings are the test worker's (tests/provisioning/conftest.py: Worker.env): lease 3 s, sweep 1 s."""

from __future__ import annotations

import datetime as dt

import pytest

from governance.services.requests import access_request_deny, access_request_submit
from notifications.models import Delivery, DeliveryStatus, Notification
from tests.provisioning.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.fault]


def outbox_settled() -> bool:
    return not (
        Notification.objects.filter(prepared_at__isnull=True).exists()
        or Delivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]).exists()
    )


def _deny_and_kill_mid_send(celery_worker, mailbox, analyst, owner, make_dataset, stage: str) -> Delivery:
    """The owner denies a request; the worker is killed while it sends the requester the decision.

    (A decision, not "waits for you": its recipients need no object permissions, which a worker that
    outlived a test's database flush would look up under stale content type ids.)"""
    req = access_request_submit(
        requester=analyst,
        dataset=make_dataset("ledger", owner=owner),
        justification="close",
        duration=dt.timedelta(days=7),
    )
    wait_for(outbox_settled)  # the submit's own message is out of the way of the stall
    mailbox.stall_at(stage)
    try:
        access_request_deny(access_request=req, approver=owner, comment="Use the aggregate instead.")
        mailbox.wait_stalled()
        delivery = Delivery.objects.get(recipient=analyst)
        assert delivery.status == DeliveryStatus.SENDING and delivery.attempts == 1  # claimed, being sent
        celery_worker.kill()
    finally:
        mailbox.release()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENDING  # the dead worker never marked it
    celery_worker.start()
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SENT, timeout=40)
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    return delivery


def test_a_worker_killed_after_the_server_took_the_message_resends_it_under_the_same_message_id(
    celery_worker, mailbox, analyst, owner, make_dataset
):
    delivery = _deny_and_kill_mid_send(celery_worker, mailbox, analyst, owner, make_dataset, "DATA")
    copies = mailbox.to(analyst.email)
    assert len(copies) == 2
    assert {m.message_id for m in copies} == {f"<{delivery.message_id}@portal.test>"}  # one message, recognisable
    assert copies[0].body() == copies[1].body() and "Use the aggregate instead." in copies[0].body()
    assert [m for m in mailbox.to(owner.email) if "denied" in m.subject] == []  # the owner decided it


def test_a_worker_killed_before_the_message_went_out_sends_it_once(
    celery_worker, mailbox, analyst, owner, make_dataset
):
    delivery = _deny_and_kill_mid_send(celery_worker, mailbox, analyst, owner, make_dataset, "RCPT")
    [received] = mailbox.to(analyst.email)
    assert received.message_id == f"<{delivery.message_id}@portal.test>"
