"""A Slack direct message sent by the real worker process (tests/provisioning/conftest.py: Worker,
whose environment points SLACK_API_URL at the local Slack of tests/slack.py), after the decision
committed, once."""

from __future__ import annotations

import datetime as dt

import pytest

from governance.services.requests import access_request_deny, access_request_submit
from notifications.models import Delivery, DeliveryStatus, Kind
from notifications.services.preferences import preference_set
from notifications.services.slack_links import slack_link_code_issue, slack_link_confirm
from tests.notifications.test_outbox_faults import outbox_settled
from tests.provisioning.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_the_worker_sends_a_decision_as_a_slack_direct_message_once(
    celery_worker, slack_api, mailbox, analyst, owner, make_dataset
):
    slack_link_confirm(code=slack_link_code_issue(user=analyst), slack_user_id="U_ANALYST")
    preference_set(
        user=analyst, actor=analyst, channel="email", digest=False, muted=[], routes={"request_decided": "slack"}
    )
    req = access_request_submit(
        requester=analyst,
        dataset=make_dataset("ledger", owner=owner),
        justification="close",
        duration=3 * dt.timedelta(days=1),
    )
    wait_for(outbox_settled)
    access_request_deny(access_request=req, approver=owner, comment="Use the aggregate instead.")
    [post] = slack_api.wait_for("/api/chat.postMessage")
    assert slack_api.problems == []
    assert post.body["channel"] == "U_ANALYST" and f"Your request #{req.pk} was denied" in post.body["text"]
    assert "Use the aggregate instead." in str(post.body["blocks"])
    wait_for(outbox_settled)
    delivery = Delivery.objects.get(kind=Kind.REQUEST_DECIDED)
    assert (delivery.channel, delivery.status, delivery.attempts) == ("slack", DeliveryStatus.SENT, 1)
    assert len(slack_api.to("/api/chat.postMessage")) == 1
    assert mailbox.to(analyst.email) == []  # Slack only, as chosen
