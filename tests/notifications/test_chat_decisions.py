"""Approve from chat, safely: Slack's interactivity endpoint (`/slack/interactive`) driven with
requests signed as Slack signs them (tests/slack.py), and the slash command that links an account.
A press decides through the portal's own services, once; everything refused is audited."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from governance.errors import DomainError
from governance.models import AccessRequest, Approval, RequestState
from governance.services.requests import access_request_submit
from notifications.models import ChatDecisionToken, Kind, Notification, SlackLink
from notifications.services.delivery import notifications_deliver
from notifications.services.preferences import preference_set
from notifications.services.slack_links import slack_link_code_issue
from notifications.slack import decision_token
from tests import slack

DAYS = dt.timedelta(days=1)


def signed_post(client: Client, path: str, fields: dict[str, str], **sign: Any) -> Any:
    body = slack.form_body(fields)
    headers: Any = slack.sign(body, **sign)
    return client.post(path, data=body, content_type="application/x-www-form-urlencoded", **headers)


def link_through_slack(client: Client, user: Any, slack_id: str) -> Any:
    code = slack_link_code_issue(user=user)
    return signed_post(
        client, "/slack/commands", {"command": "/portal-link", "text": code, "user_id": slack_id, "team_id": "T1"}
    )


def press(client: Client, value: str, *, action: str = "approve", slack_id: str = "U_OWNER", **sign: Any) -> Any:
    payload = {
        "type": "block_actions",
        "user": {"id": slack_id, "team_id": "T1"},
        "response_url": f"{slack.current().url}/response/msg1",  # type: ignore[union-attr]
        "actions": [{"action_id": action, "value": value, "type": "button"}],
    }
    return signed_post(client, "/slack/interactive", {"payload": json.dumps(payload)}, **sign)


@pytest.fixture
def world(db: Any, slack_api: Any, mailbox: Any, analyst: Any, owner: Any, make_dataset: Any) -> dict[str, Any]:
    """A low-risk request waiting for `owner`, who linked Slack (U_OWNER) and gets it there: the
    message's buttons, as the local Slack received them."""
    client = Client()
    assert json.loads(link_through_slack(client, owner, "U_OWNER").content)["text"].startswith("Linked")
    preference_set(
        user=owner, actor=owner, channel="email", digest=False, muted=[], routes={"request_waiting": "slack"}
    )
    req = access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=3 * DAYS
    )
    notifications_deliver(notification_ids=list(Notification.objects.values_list("pk", flat=True)))
    [post] = slack_api.to("/api/chat.postMessage")
    return {"client": client, "request": req, "buttons": post.button_values()}


def refusals(action: str = "access_request.chat_decide") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, outcome="denied").order_by("pk"))


@pytest.mark.django_db
def test_a_linked_approvers_press_approves_once_audited_from_slack_and_the_message_shows_who(world, slack_api, owner):
    req = world["request"]
    response = press(world["client"], world["buttons"]["approve"])
    assert response.status_code == 200, response.content
    req.refresh_from_db()
    assert req.state == RequestState.APPROVED
    [approval] = Approval.objects.filter(request=req)
    assert approval.approver == owner and approval.comment == "Approved in Slack."
    decided = AuditEvent.objects.get(action="access_request.decided_in_chat")
    assert decided.source == "slack" and decided.metadata["source"] == "slack" and decided.actor_id == owner.pk
    assert AuditEvent.objects.get(action="access_request.approved").source == "slack"
    [update] = slack_api.to("/response/msg1")
    assert update.body["replace_original"] is True and "Approved by owner in Slack." in update.body["text"]
    assert "actions" not in json.dumps(update.body)  # the buttons are gone
    assert Notification.objects.filter(kind=Kind.REQUEST_DECIDED).count() == 1  # the requester hears of it
    assert ChatDecisionToken.objects.get().used_for == "approve"


@pytest.mark.django_db
def test_a_deny_press_denies_with_a_reason_the_requester_sees(world):
    assert press(world["client"], world["buttons"]["deny"], action="deny").status_code == 200
    req = AccessRequest.objects.get(pk=world["request"].pk)
    assert req.state == RequestState.DENIED and req.decision_reason == "Denied in Slack."


@pytest.mark.django_db
def test_a_replayed_token_is_refused_and_audited(world):
    assert press(world["client"], world["buttons"]["approve"]).status_code == 200
    again = press(world["client"], world["buttons"]["approve"])
    other = press(world["client"], world["buttons"]["deny"], action="deny")  # the other button of the message
    assert again.status_code == 409 and other.status_code == 409
    assert Approval.objects.filter(request=world["request"]).count() == 1
    assert [e.reason for e in refusals()][-1].startswith("These buttons were already used")
    assert len(refusals()) == 2 and all(e.source == "slack" for e in refusals())


@pytest.mark.django_db
def test_an_unlinked_slack_user_is_refused_and_audited(world, slack_api):
    response = press(world["client"], world["buttons"]["approve"], slack_id="U_STRANGER")
    assert response.status_code == 403
    assert AccessRequest.objects.get(pk=world["request"].pk).state == RequestState.PENDING
    [event] = refusals()
    assert "not linked" in event.reason and event.metadata["slack_user_id"] == "U_STRANGER"
    assert event.target_id == str(world["request"].pk)
    assert "not linked" in slack_api.to("/response/msg1")[0].body["text"]  # told privately
    assert ChatDecisionToken.objects.get().used_at is None  # still usable by its approver


@pytest.mark.django_db
def test_another_linked_approvers_press_on_someone_elses_buttons_is_refused(world, officer):
    link_through_slack(world["client"], officer, "U_OFFICER")
    assert press(world["client"], world["buttons"]["approve"], slack_id="U_OFFICER").status_code == 403
    assert "another approver" in refusals()[0].reason


@pytest.mark.django_db
def test_a_high_risk_request_is_refused_and_audited_even_with_a_valid_token(world, owner, analyst, make_dataset):
    req = access_request_submit(
        requester=analyst,
        dataset=make_dataset("payroll", owner=owner),
        level="write",
        justification="fix",
        duration=3 * DAYS,
    )
    # Buttons the portal would never have offered (a write): the press re-checks the rule anyway.
    token = ChatDecisionToken.objects.create(request=req, stage=req.current_stage, approver=owner)
    response = press(world["client"], decision_token(token.nonce, "approve"))
    assert response.status_code == 403
    assert AccessRequest.objects.get(pk=req.pk).state == RequestState.PENDING
    assert "not low risk" in refusals()[0].reason


@pytest.mark.django_db
def test_a_request_that_became_high_risk_after_the_message_is_refused(world):
    from governance.models import ColumnTag, TagStatus

    column = world["request"].dataset.columns.get(name="amount")
    ColumnTag.objects.create(column=column, tag="email", status=TagStatus.CONFIRMED)
    assert press(world["client"], world["buttons"]["approve"]).status_code == 403
    assert "PII" in refusals()[0].reason


@pytest.mark.django_db
def test_a_self_approval_from_slack_is_refused_by_the_portals_own_rule_and_audited(world, analyst):
    link_through_slack(world["client"], analyst, "U_ANALYST")
    req = world["request"]
    token = ChatDecisionToken.objects.create(request=req, stage=req.current_stage, approver=analyst)
    response = press(world["client"], decision_token(token.nonce, "approve"), slack_id="U_ANALYST")
    assert response.status_code == 403
    assert "separation of duties" in refusals()[0].reason
    assert AccessRequest.objects.get(pk=req.pk).state == RequestState.PENDING
    token.refresh_from_db()
    assert token.used_at is None  # the refused decision rolled the nonce back with it


@pytest.mark.django_db
def test_a_forged_token_is_refused(world):
    assert press(world["client"], world["buttons"]["approve"] + "x").status_code == 403
    assert "not one the portal sent" in refusals()[0].reason


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sign", "reason"),
    [
        ({"secret": "not-the-signing-secret"}, "does not match"),
        ({"age": 301}, "five minutes"),  # signed correctly, but too old: a replay
        ({"age": -301}, "five minutes"),  # from the future
    ],
)
def test_a_bad_signature_or_a_stale_timestamp_is_refused_and_audited(world, sign, reason):
    sign = dict(sign)
    if "age" in sign:
        sign["timestamp"] = int(time.time()) - sign.pop("age")
    response = press(world["client"], world["buttons"]["approve"], **sign)
    assert response.status_code == 401
    assert AccessRequest.objects.get(pk=world["request"].pk).state == RequestState.PENDING
    [event] = refusals("slack.request_refused")
    assert reason in event.reason and event.source == "slack"
    assert ChatDecisionToken.objects.get().used_at is None


@pytest.mark.django_db
def test_an_unsigned_request_and_a_malformed_payload_are_told_apart(world):
    unsigned = world["client"].post("/slack/interactive", {"payload": "{}"})
    assert unsigned.status_code == 401
    bad = signed_post(world["client"], "/slack/interactive", {"payload": "not json"})
    assert bad.status_code == 400 and json.loads(bad.content)["field"] == "payload"


@pytest.mark.django_db
def test_the_link_command_refuses_a_wrong_code_and_a_forged_request(analyst, slack_api):
    client = Client()
    slack_link_code_issue(user=analyst)
    wrong = signed_post(client, "/slack/commands", {"text": "WRONGCODE1", "user_id": "U9"})
    assert "wrong or has expired" in json.loads(wrong.content)["text"]
    body = slack.form_body({"text": "X", "user_id": "U9"})
    forged = client.post("/slack/commands", data=body, content_type="application/x-www-form-urlencoded")
    assert forged.status_code == 401
    assert not SlackLink.objects.filter(slack_user_id="U9").exists()
    assert AuditEvent.objects.filter(action="slack_link.confirm", outcome="denied").count() == 1


@pytest.mark.django_db
def test_the_slack_page_issues_a_code_to_the_signed_in_person(client, analyst):
    client.force_login(analyst)
    page = client.post("/portal/notifications/slack/", {"action": "code"})
    assert page.status_code == 200 and "/portal-link " in page.content.decode()
    assert SlackLink.objects.get(user=analyst).code_hash


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_presses_decide_once(slack_api, mailbox, analyst, owner, make_dataset):
    from governance.services.chat import access_request_decide_from_chat

    client = Client()
    link_through_slack(client, owner, "U_OWNER")
    req = access_request_submit(
        requester=analyst, dataset=make_dataset("ledger", owner=owner), justification="close", duration=3 * DAYS
    )
    token = ChatDecisionToken.objects.create(request=req, stage=req.current_stage, approver=owner)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def one(action: str) -> None:
        try:
            barrier.wait()
            access_request_decide_from_chat(
                token=decision_token(token.nonce, action), action=action, slack_user_id="U_OWNER"
            )
            outcomes.append("decided")
        except DomainError as exc:
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(a,)) for a in ("approve", "deny")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ConflictError", "decided"]
    assert Approval.objects.filter(request=req).count() == 1
    assert AccessRequest.objects.get(pk=req.pk).state in (RequestState.APPROVED, RequestState.DENIED)


@pytest.mark.django_db
def test_a_press_costs_a_pinned_number_of_queries(world):
    """The press's own checks (link, nonce, request, the low-risk rule) plus the approval service (which
    re-reads the column treatment rules the request was submitted under: one query)."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        assert press(world["client"], world["buttons"]["approve"]).status_code == 200
    assert len(ctx.captured_queries) == 35, [q["sql"][:80] for q in ctx.captured_queries]
