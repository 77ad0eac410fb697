"""Loud: every security officer hears of a break of the glass at once, by email through a real SMTP
server, whatever they chose (muted, daily digest); the person who broke it is not told of their own act."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from breakglass.services.activation import break_glass_activate
from governance.models import Dataset
from notifications.models import Delivery, Notification, Preference
from notifications.services.delivery import notifications_deliver
from tests.breakglass.conftest import code_for

pytestmark = pytest.mark.django_db


def test_every_officer_is_emailed_at_once_even_muted_or_on_a_digest(
    policies: Any,
    on_call: Any,
    officers: list[Any],
    make_dataset: Callable[..., Dataset],
    mailbox: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    dataset = make_dataset("orders", classification="internal", schema="shop")
    Preference.objects.create(user=officers[0], muted=["break_glass_activated"], digest=True)
    Preference.objects.create(user=officers[1], digest=True)
    with django_capture_on_commit_callbacks(execute=False):  # the worker's part runs below, here
        use = break_glass_activate(
            actor=on_call, dataset=dataset, reason="INC-9: payments stuck", hours=1, otp_token=code_for(on_call)
        )
    notice = Notification.objects.get(kind="break_glass_activated")
    result = notifications_deliver(notification_ids=[notice.pk])
    assert result.as_dict() == {"sent": 2, "retrying": 0, "failed": 0}
    assert set(Delivery.objects.values_list("recipient__username", "status")) == {
        ("officer1", "sent"),
        ("officer2", "sent"),
    }
    mails = mailbox.wait_for(2)
    assert sorted(r for m in mails for r in m.recipients) == ["officer1@example.com", "officer2@example.com"]
    mail = mailbox.to("officer1@example.com")[0]
    assert mail.subject == "BREAK-GLASS: oncall opened shop.orders"
    body = mail.body()
    assert "INC-9: payments stuck" in body and "assigned to officer1" in body
    assert f"http://portal.test/portal/break-glass/{use.pk}/" in body
    assert not mailbox.to("oncall@example.com")
