"""The Slack message of a delivery, made when it is prepared (in the prepare transaction).

A "waits for your decision" direct message carries Approve / Deny buttons only when the request is
low risk (`governance.policy.chat_decision_refusal`, the one rule); the buttons' nonce
(`ChatDecisionToken`) is written here, for this approver and this stage. Anything else, and every
webhook post (a team channel, where the buttons would be anyone's), links to the portal instead."""

from __future__ import annotations

from typing import Any

from governance.policy import chat_decision_refusal

from ..messages import Message
from ..models import ChatDecisionToken, Kind, Notification
from ..slack import WEBHOOK_PREFIX, blocks_for


def slack_payload(n: Notification, m: Message, subject: str, text: str, address: str) -> dict[str, Any]:
    if n.kind != Kind.REQUEST_WAITING:
        return blocks_for(subject=subject, body_text=text, link=m.link)
    request = m.context["request"]
    direct = not address.startswith(WEBHOOK_PREFIX)
    if direct and chat_decision_refusal(access_request=request) is None:
        token = ChatDecisionToken.objects.create(request=request, stage=n.context["stage"], approver=m.recipient)
        return blocks_for(subject=subject, body_text=text, link=m.link, decision=token)
    return blocks_for(subject=subject, body_text=text, link=m.link, inbox=m.context.get("inbox", ""))
