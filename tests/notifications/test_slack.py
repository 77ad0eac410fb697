"""The Slack channel against a local Slack (tests/slack.py, a real HTTP server): direct messages
through chat.postMessage with the bot token, team webhooks, Block Kit with a text fallback, the
choice of email, Slack or both per kind, and the low-risk rule that decides whether a "waits for
your decision" message carries Approve / Deny buttons (governance.policy.chat_decision_refusal)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from accounts.models import Team, TeamMembership
from governance.policy import chat_decision_refusal
from governance.services.requests import access_request_approve, access_request_submit
from notifications.models import ChatDecisionToken, Delivery, DeliveryStatus, Kind, Notification, SlackLink
from notifications.services.delivery import notifications_deliver
from notifications.services.preferences import preference_set
from notifications.services.slack_links import slack_link_code_issue, slack_link_confirm
from notifications.services.slack_webhooks import slack_webhook_set
from notifications.slack import decision_nonce

pytestmark = pytest.mark.django_db

DAYS = dt.timedelta(days=1)
POST_MESSAGE = "/api/chat.postMessage"


def deliver_all() -> None:
    notifications_deliver(notification_ids=list(Notification.objects.values_list("pk", flat=True)))


def link(user: Any, slack_id: str) -> None:
    slack_link_confirm(code=slack_link_code_issue(user=user), slack_user_id=slack_id, slack_team_id="T1")


def route(user: Any, **routes: str) -> None:
    preference_set(user=user, actor=user, channel="email", digest=False, muted=[], routes=routes)


# --- the low-risk rule, on its own ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "refused"),
    [
        ({}, None),
        ({"classification": "restricted"}, "Restricted"),
        ({"pii": True}, "PII"),
        ({"level": "write"}, "Write"),
        ({"days": 8}, "longer than 7 days"),
        ({"classification": "confidential", "mfa": True}, "authenticator"),
        ({"classification": "confidential"}, None),  # no second factor required here: low risk
    ],
)
def test_the_low_risk_rule_offers_buttons_only_for_read_access_without_pii_for_a_week_or_less(
    case, refused, analyst, owner, make_dataset, settings
):
    settings.MFA_REQUIRED = case.get("mfa", False)
    ds = make_dataset(
        "ledger",
        classification=case.get("classification", "internal"),
        owner=owner,
        pii={"amount": "email"} if case.get("pii") else None,
    )
    req = access_request_submit(
        requester=analyst,
        dataset=ds,
        level=case.get("level", "read"),
        justification="close",
        duration=case.get("days", 7) * DAYS,
    )
    reason = chat_decision_refusal(access_request=req)
    assert (reason is None) if refused is None else (refused in (reason or "")), reason


def test_the_low_risk_rule_sees_a_column_that_became_pii_after_the_request(analyst, owner, make_dataset):
    from governance.models import ColumnTag, TagStatus

    ds = make_dataset("ledger", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=3 * DAYS)
    assert chat_decision_refusal(access_request=req) is None
    ColumnTag.objects.create(column=ds.columns.get(name="amount"), tag="email", status=TagStatus.CONFIRMED)
    assert "PII" in (chat_decision_refusal(access_request=req) or "")


# --- the channel ------------------------------------------------------------------------------------


def test_a_low_risk_request_reaches_a_linked_approver_as_a_direct_message_with_approve_and_deny(
    slack_api, mailbox, analyst, owner, make_dataset
):
    link(owner, "U_OWNER")
    route(owner, request_waiting="slack")
    req = access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=3 * DAYS
    )
    deliver_all()
    [post] = slack_api.to(POST_MESSAGE)
    assert slack_api.problems == []
    assert post.headers["Authorization"] == "Bearer xoxb-test-bot-token"
    assert post.body["channel"] == "U_OWNER"
    assert f"Request #{req.pk} waits for your decision" in post.body["text"]
    assert "close" in str(post.body["blocks"])  # the justification, in the blocks
    buttons = post.button_values()
    assert set(buttons) == {"approve", "deny", "open"}
    token = ChatDecisionToken.objects.get()
    assert (token.request_id, token.approver_id, token.used_at) == (req.pk, owner.pk, None)
    assert decision_nonce(buttons["approve"], "approve") == str(token.nonce)
    assert decision_nonce(buttons["approve"], "deny") is None  # a token is for its own button
    assert mailbox.to(owner.email) == []  # Slack only, as chosen
    delivery = Delivery.objects.get(recipient=owner)
    assert (delivery.channel, delivery.address, delivery.status) == ("slack", "U_OWNER", DeliveryStatus.SENT)
    assert post.body["metadata"]["event_payload"]["delivery"] == str(delivery.message_id)


def test_a_request_that_is_not_low_risk_links_to_the_inbox_without_buttons(slack_api, analyst, owner, make_dataset):
    link(owner, "U_OWNER")
    route(owner, request_waiting="slack")
    access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=30 * DAYS
    )
    deliver_all()
    [post] = slack_api.to(POST_MESSAGE)
    assert set(post.button_values()) == {"open"}
    assert post.button_values()["open"].endswith("/portal/inbox/")
    assert not ChatDecisionToken.objects.exists()


def test_an_unlinked_person_is_told_on_their_teams_webhook_without_buttons(
    slack_api, analyst, owner, gov_admin, make_dataset
):
    team = Team.objects.create(name="Finance", slug="finance")
    TeamMembership.objects.create(team=team, user=owner)
    hook = slack_webhook_set(actor=gov_admin, team=team, channel="#finance", url=f"{slack_api.url}/hooks/finance")
    assert "hooks/finance" not in hook.url_encrypted  # stored encrypted
    route(owner, request_waiting="slack")
    access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=3 * DAYS
    )
    deliver_all()
    [post] = slack_api.to("/hooks/finance")
    assert slack_api.problems == [] and "waits for your decision" in post.body["text"]
    assert "approve" not in post.button_values()  # a channel's buttons would be anyone's
    assert Delivery.objects.get(recipient=owner).address == f"webhook:{hook.pk}"


def test_both_sends_an_email_and_a_slack_message_and_slack_unreachable_falls_back_to_email(
    slack_api, mailbox, analyst, owner, make_dataset
):
    link(analyst, "U_ANALYST")
    route(analyst, request_decided="both")
    route(owner, request_waiting="slack")  # not linked, no team webhook: email instead
    ds = make_dataset("ledger", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=3 * DAYS)
    deliver_all()
    access_request_approve(access_request=req, approver=owner, comment="ok")
    deliver_all()
    assert [p.body["channel"] for p in slack_api.to(POST_MESSAGE)] == ["U_ANALYST"]
    assert len(mailbox.to(analyst.email)) == 1 and len(mailbox.to(owner.email)) == 1
    assert sorted(Delivery.objects.filter(kind=Kind.REQUEST_DECIDED).values_list("channel", flat=True)) == [
        "email",
        "slack",
    ]


def test_slack_rate_limits_are_retried_and_a_refused_channel_fails_once_audited(
    slack_api, analyst, owner, make_dataset
):
    from audit.models import AuditEvent

    link(owner, "U_OWNER")
    route(owner, request_waiting="slack")
    slack_api.fail_next(429, {"ok": False, "error": "ratelimited"})
    access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=3 * DAYS
    )
    deliver_all()
    delivery = Delivery.objects.get(recipient=owner)
    assert delivery.status == DeliveryStatus.PENDING and "429" in delivery.last_error  # backing off
    SlackLink.objects.filter(user=owner).update(slack_user_id="U_GONE")
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None, address="U_GONE")
    slack_api.fail_next(200, {"ok": False, "error": "channel_not_found"})
    deliver_all()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and "channel_not_found" in delivery.last_error
    assert AuditEvent.objects.filter(action="notification.delivery_failed", target_id=str(delivery.pk)).count() == 1


def test_a_link_code_works_once_for_the_slack_user_slack_names(analyst, owner):
    code = slack_link_code_issue(user=analyst)
    assert SlackLink.objects.get(user=analyst).code_hash != code  # only its hash is kept
    assert slack_link_confirm(code=code.lower(), slack_user_id="U1") == analyst
    from governance.errors import ConflictError, InvalidInput

    with pytest.raises(InvalidInput):
        slack_link_confirm(code=code, slack_user_id="U2")  # used
    with pytest.raises(ConflictError):  # one Slack user, one portal account
        slack_link_confirm(code=slack_link_code_issue(user=owner), slack_user_id="U1")
    assert SlackLink.objects.get(user=analyst).slack_user_id == "U1"
